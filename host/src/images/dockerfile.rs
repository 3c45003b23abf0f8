//! The instruction form (OpenDCP's tool-defined mode) rendered to a
//! Dockerfile. Every value is one line and every path or exec-form argument
//! is written as a JSON array, so no value a user types can end its
//! instruction and start another.

use dcp_api_types::Instruction;

use crate::validate::{self, Checks, Invalid};

/// The most instructions one form holds.
pub const INSTRUCTIONS_MAX: usize = 200;
/// The most characters of one value (a RUN's command line, say).
const VALUE_MAX: usize = 8192;
/// The most characters of a path.
const PATH_MAX: usize = 1024;
/// The most exec-form arguments.
const ARGS_MAX: usize = 64;

/// Checks `instructions` (fields named `instructions[i].…`) and renders
/// them, one line each.
///
/// # Errors
/// Every field that breaks a rule, all at once.
pub fn render(instructions: &[Instruction]) -> Result<String, Invalid> {
    check(instructions)?;
    let mut out = String::new();
    for instruction in instructions {
        out.push_str(&line(instruction));
        out.push('\n');
    }
    Ok(out)
}

fn check(instructions: &[Instruction]) -> Result<(), Invalid> {
    if instructions.is_empty() {
        return Err(Invalid::new("instructions", "needs at least FROM"));
    }
    if instructions.len() > INSTRUCTIONS_MAX {
        return Err(Invalid::new(
            "instructions",
            format!("must be at most {INSTRUCTIONS_MAX}"),
        ));
    }
    let mut checks = Checks::default();
    let first = instructions
        .iter()
        .position(|i| !matches!(i, Instruction::Arg { .. }))
        .unwrap_or(instructions.len());
    if !matches!(instructions.get(first), Some(Instruction::From { .. })) {
        checks.check(Err(Invalid::new(
            format!("instructions[{first}].op"),
            "must be FROM: an image starts from a base (only ARGs may come before)",
        )));
    }
    for (i, instruction) in instructions.iter().enumerate() {
        let field = |name: &str| format!("instructions[{i}].{name}");
        match instruction {
            Instruction::From { image } => {
                checks.check(validate::image_reference(field("image"), image));
            }
            Instruction::Arg { name, default } => {
                checks.check(variable(field("name"), name));
                if let Some(value) = default {
                    checks.check(text(field("default"), value));
                }
            }
            Instruction::Run { command } => checks.check(one_line(field("command"), command)),
            Instruction::Copy {
                source,
                destination,
            }
            | Instruction::Add {
                source,
                destination,
            } => {
                checks.check(path(field("source"), source));
                checks.check(path(field("destination"), destination));
            }
            Instruction::Workdir { path: p } | Instruction::Volume { path: p } => {
                checks.check(path(field("path"), p).and_then(|()| absolute(field("path"), p)));
            }
            Instruction::Env { name, value } => {
                checks.check(variable(field("name"), name));
                checks.check(text(field("value"), value));
            }
            Instruction::Label { name, value } => {
                checks.check(one_line(field("name"), name));
                checks.check(text(field("value"), value));
            }
            Instruction::Expose { port, protocol } => {
                if *port == 0 {
                    checks.check(Err(Invalid::new(field("port"), "must be 1–65535")));
                }
                if !matches!(protocol.as_str(), "tcp" | "udp") {
                    checks.check(Err(Invalid::new(field("protocol"), "must be tcp or udp")));
                }
            }
            Instruction::User { user } => checks.check(user_spec(field("user"), user)),
            Instruction::Entrypoint { args } | Instruction::Cmd { args } => {
                if args.is_empty() {
                    checks.check(Err(Invalid::new(field("args"), "needs the program")));
                } else if args.len() > ARGS_MAX {
                    checks.check(Err(Invalid::new(
                        field("args"),
                        format!("must be at most {ARGS_MAX}"),
                    )));
                }
                for (j, arg) in args.iter().enumerate() {
                    checks.check(text(format!("instructions[{i}].args[{j}]"), arg));
                }
            }
        }
    }
    checks.finish()
}

/// Present, one line, at most [`VALUE_MAX`] characters.
fn one_line(field: String, value: &str) -> Result<(), Invalid> {
    validate::name(field, value, VALUE_MAX)
}

/// Any value on one line, empty included.
fn text(field: String, value: &str) -> Result<(), Invalid> {
    if value.contains(['\n', '\r']) {
        return Err(Invalid::new(field, "must be one line"));
    }
    validate::max_chars(field, value, VALUE_MAX)
}

fn path(field: String, value: &str) -> Result<(), Invalid> {
    validate::name(field, value, PATH_MAX)
}

fn absolute(field: String, value: &str) -> Result<(), Invalid> {
    if value.starts_with('/') {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            "must be an absolute path (start with '/')",
        ))
    }
}

fn variable(field: String, value: &str) -> Result<(), Invalid> {
    let ok = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && value.len() <= 255;
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            "must be a variable name: letters, digits and '_', not starting with a digit",
        ))
    }
}

fn user_spec(field: String, value: &str) -> Result<(), Invalid> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            "must be a user name or id, optionally ':group' (letters, digits, '_', '-', '.')",
        ))
    }
}

/// A JSON string: what a Dockerfile reads in exec form and in quoted ENV
/// and LABEL values alike (backslash escapes `"` and `\`).
fn quoted(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

fn array(values: &[&str]) -> String {
    serde_json::to_string(values).unwrap_or_default()
}

fn line(instruction: &Instruction) -> String {
    match instruction {
        Instruction::From { image } => format!("FROM {image}"),
        Instruction::Arg {
            name,
            default: None,
        } => format!("ARG {name}"),
        Instruction::Arg {
            name,
            default: Some(value),
        } => format!("ARG {name}={}", quoted(value)),
        Instruction::Run { command } => format!("RUN {command}"),
        Instruction::Copy {
            source,
            destination,
        } => format!("COPY {}", array(&[source, destination])),
        Instruction::Add {
            source,
            destination,
        } => format!("ADD {}", array(&[source, destination])),
        Instruction::Workdir { path } => format!("WORKDIR {path}"),
        Instruction::Env { name, value } => format!("ENV {name}={}", quoted(value)),
        Instruction::Expose { port, protocol } => format!("EXPOSE {port}/{protocol}"),
        Instruction::Label { name, value } => {
            format!("LABEL {}={}", quoted(name), quoted(value))
        }
        Instruction::User { user } => format!("USER {user}"),
        Instruction::Volume { path } => format!("VOLUME {}", array(&[path])),
        Instruction::Entrypoint { args } => format!(
            "ENTRYPOINT {}",
            array(&args.iter().map(String::as_str).collect::<Vec<_>>())
        ),
        Instruction::Cmd { args } => format!(
            "CMD {}",
            array(&args.iter().map(String::as_str).collect::<Vec<_>>())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from() -> Instruction {
        Instruction::From {
            image: "127.0.0.1:5000/base/busybox:1".into(),
        }
    }

    #[test]
    fn every_instruction_renders_to_its_dockerfile_line() {
        let all = vec![
            Instruction::Arg {
                name: "BASE_TAG".into(),
                default: Some("1".into()),
            },
            from(),
            Instruction::Arg {
                name: "FLAVOUR".into(),
                default: None,
            },
            Instruction::Run {
                command: "echo hi && mkdir -p /srv".into(),
            },
            // OpenDCP's COPY plugin emitted ENV; here COPY is COPY.
            Instruction::Copy {
                source: "site dir".into(),
                destination: "/srv/www".into(),
            },
            Instruction::Add {
                source: "app.tar".into(),
                destination: "/opt/".into(),
            },
            Instruction::Workdir {
                path: "/srv".into(),
            },
            Instruction::Env {
                name: "GREETING".into(),
                value: r#"say "hi" \ bye"#.into(),
            },
            Instruction::Expose {
                port: 8080,
                protocol: "tcp".into(),
            },
            Instruction::Label {
                name: "org.example.team".into(),
                value: "web".into(),
            },
            Instruction::User {
                user: "1000:1000".into(),
            },
            Instruction::Volume {
                path: "/data".into(),
            },
            Instruction::Entrypoint {
                args: vec!["httpd".into(), "-f".into()],
            },
            Instruction::Cmd {
                args: vec!["-p".into(), "8080".into()],
            },
        ];
        assert_eq!(
            render(&all).unwrap(),
            "ARG BASE_TAG=\"1\"\n\
             FROM 127.0.0.1:5000/base/busybox:1\n\
             ARG FLAVOUR\n\
             RUN echo hi && mkdir -p /srv\n\
             COPY [\"site dir\",\"/srv/www\"]\n\
             ADD [\"app.tar\",\"/opt/\"]\n\
             WORKDIR /srv\n\
             ENV GREETING=\"say \\\"hi\\\" \\\\ bye\"\n\
             EXPOSE 8080/tcp\n\
             LABEL \"org.example.team\"=\"web\"\n\
             USER 1000:1000\n\
             VOLUME [\"/data\"]\n\
             ENTRYPOINT [\"httpd\",\"-f\"]\n\
             CMD [\"-p\",\"8080\"]\n"
        );
    }

    #[test]
    fn a_value_cannot_start_another_instruction() {
        let sneaky = vec![
            from(),
            Instruction::Run {
                command: "true\nRUN rm -rf /".into(),
            },
            Instruction::Env {
                name: "A".into(),
                value: "x\nUSER root".into(),
            },
            Instruction::Cmd {
                args: vec!["sh\n".into()],
            },
        ];
        let invalid = render(&sneaky).unwrap_err();
        let fields: Vec<_> = std::iter::once(&invalid)
            .chain(&invalid.also)
            .map(|i| i.field.to_string())
            .collect();
        assert_eq!(
            fields,
            [
                "instructions[1].command",
                "instructions[2].value",
                "instructions[3].args[0]"
            ]
        );
    }

    #[test]
    fn a_form_starts_from_a_valid_base_and_names_each_broken_field() {
        let invalid = render(&[Instruction::Run {
            command: "true".into(),
        }])
        .unwrap_err();
        assert_eq!(invalid.field, "instructions[0].op");
        let invalid = render(&[
            Instruction::From {
                image: "Not A Ref".into(),
            },
            Instruction::Workdir {
                path: "relative".into(),
            },
            Instruction::Expose {
                port: 0,
                protocol: "sctp".into(),
            },
            Instruction::Env {
                name: "1BAD".into(),
                value: String::new(),
            },
            Instruction::Cmd { args: vec![] },
        ])
        .unwrap_err();
        let fields: Vec<_> = std::iter::once(&invalid)
            .chain(&invalid.also)
            .map(|i| i.field.to_string())
            .collect();
        assert_eq!(
            fields,
            [
                "instructions[0].image",
                "instructions[1].path",
                "instructions[2].port",
                "instructions[2].protocol",
                "instructions[3].name",
                "instructions[4].args"
            ]
        );
        assert!(render(&[]).is_err());
    }
}

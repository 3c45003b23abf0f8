//! Image projects and their builds, in the Images area: the projects, a
//! project's form (its Dockerfile as text, from git, or composed from
//! instruction rows with the server's rendering beside them; deploy media;
//! build arguments), a project with its build form and history, and one
//! build with its log streaming live.

use std::collections::BTreeMap;

use dcp_api_types::{
    BuildLog, BuildState, DockerfileInput, DockerfileSource, ErrorCode, GitSourceInput, ImageBuild,
    ImageBuildInput, ImageProject, ImageProjectInput, Instruction, Media, MediaInput, MediaKind,
    PageQuery, RenderInput,
};
use leptos::{ev::SubmitEvent, html, prelude::*, task::spawn_local};
use leptos_router::{
    components::A,
    hooks::{use_navigate, use_params_map},
};
use wasm_bindgen::{JsCast as _, closure::Closure};

use crate::{
    api::{self, ApiError},
    components::{
        ConfirmDelete, Doomed, ErrorBanner, Field, Pager, load_error, short_time, show_form_error,
    },
    images::{ImagesTabs, human_bytes, link, short_digest},
    machines::every,
    templates::Labelled,
};

/// The `:id` of the address, when it is a number.
fn id_param() -> Memo<Option<i64>> {
    let params = use_params_map();
    Memo::new(move |_| params.with(|p| p.get("id").and_then(|id| id.parse().ok())))
}

/// A build's state as a badge; its state is in `data-state`.
fn state_badge(state: BuildState) -> impl IntoView {
    view! {
        <span class=format!("badge state-{}", state.as_str()) data-state=state.as_str()>{state.as_str()}</span>
    }
}

/// Milliseconds as people read them: `850 ms`, `12.3 s`, `4 min 05 s`.
fn took(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        let secs = ms / 1000;
        format!("{} min {:02} s", secs / 60, secs % 60)
    }
}

/// `A=1 · B=2`, or `none`.
fn args_text(args: &BTreeMap<String, String>) -> String {
    if args.is_empty() {
        return "none".to_owned();
    }
    args.iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The name of a Dockerfile source's kind, as the API says it.
fn source_kind(source: &DockerfileSource) -> &'static str {
    match source {
        DockerfileSource::Text { .. } => "text",
        DockerfileSource::Git { .. } => "git",
        DockerfileSource::Form { .. } => "form",
    }
}

/// The name of a media kind, as the API says it.
fn media_kind(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Git => "git",
        MediaKind::Svn => "svn",
    }
}

/// ", as alice, password stored" for a source's credentials.
fn credentials_text(username: Option<&str>, password_set: bool) -> String {
    let mut text = String::new();
    if let Some(user) = username {
        text.push_str(&format!(", as {user}"));
    }
    if password_set {
        text.push_str(", password stored");
    }
    text
}

/// Where a project's Dockerfile comes from, in a line.
fn source_text(source: &DockerfileSource) -> String {
    match source {
        DockerfileSource::Text { .. } => "written as text".to_owned(),
        DockerfileSource::Git { repository, path } => format!(
            "{path} of {} at {}{}",
            repository.url,
            repository.git_ref,
            credentials_text(repository.username.as_deref(), repository.password_set)
        ),
        DockerfileSource::Form { instructions } => {
            format!("composed of {} instructions", instructions.len())
        }
    }
}

/// Where a project's deploy media come from, in a line.
fn media_text(media: &Media) -> String {
    let subdirectory = if media.subdirectory.is_empty() {
        String::new()
    } else {
        format!(" (its {})", media.subdirectory)
    };
    format!(
        "{} {} at {}{subdirectory} → {}{}",
        media_kind(media.kind),
        media.url,
        media.revision,
        media.target,
        credentials_text(media.username.as_deref(), media.password_set)
    )
}

// ---- the instruction form ----

/// The instruction form's ops, in the order its select offers them.
const OPS: [&str; 13] = [
    "FROM",
    "ARG",
    "RUN",
    "COPY",
    "ADD",
    "WORKDIR",
    "ENV",
    "EXPOSE",
    "LABEL",
    "USER",
    "VOLUME",
    "ENTRYPOINT",
    "CMD",
];

/// Where the instruction rows are in a request's field names.
const ROWS: &str = "dockerfile.instructions";

/// The inputs of an op: the API field each fills and its placeholder
/// (at most two).
fn slots(op: &str) -> &'static [(&'static str, &'static str)] {
    match op {
        "FROM" => &[("image", "or another image, e.g. debian:12")],
        "ARG" => &[
            ("name", "NAME"),
            ("default", "default (none: a build must give it)"),
        ],
        "RUN" => &[("command", "a command line, e.g. apt-get install -y curl")],
        "COPY" | "ADD" => &[
            ("source", "a path in the build context"),
            ("destination", "a path in the image"),
        ],
        "WORKDIR" | "VOLUME" => &[("path", "/an/absolute/path")],
        "ENV" | "LABEL" => &[("name", "name"), ("value", "value")],
        "EXPOSE" => &[("port", "1–65535"), ("protocol", "")],
        "USER" => &[("user", "user[:group]")],
        _ => &[("args", "program and arguments, quoted as in a shell")],
    }
}

/// Splits a line into words as a shell does: `'…'` and `"…"` keep spaces,
/// `\` takes the next character as it is.
fn split_words(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("a ' is not closed"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("a \" is not closed"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("a \" is not closed"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next().unwrap_or('\\'));
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Words as a line [`split_words`] reads back the same: a word that is
/// empty or holds spaces, quotes or backslashes is single-quoted.
fn join_words(words: &[String]) -> String {
    words
        .iter()
        .map(|word| {
            let plain = !word.is_empty()
                && !word.contains(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '\\'));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An instruction as a row shows it: its op and its inputs' text.
fn row_text(instruction: &Instruction) -> (&'static str, String, String) {
    let one = |op, a: &String| (op, a.clone(), String::new());
    let two = |op, a: &String, b: &String| (op, a.clone(), b.clone());
    match instruction {
        Instruction::From { image } => one("FROM", image),
        Instruction::Arg { name, default } => {
            ("ARG", name.clone(), default.clone().unwrap_or_default())
        }
        Instruction::Run { command } => one("RUN", command),
        Instruction::Copy {
            source,
            destination,
        } => two("COPY", source, destination),
        Instruction::Add {
            source,
            destination,
        } => two("ADD", source, destination),
        Instruction::Workdir { path } => one("WORKDIR", path),
        Instruction::Env { name, value } => two("ENV", name, value),
        Instruction::Expose { port, protocol } => ("EXPOSE", port.to_string(), protocol.clone()),
        Instruction::Label { name, value } => two("LABEL", name, value),
        Instruction::User { user } => one("USER", user),
        Instruction::Volume { path } => one("VOLUME", path),
        Instruction::Entrypoint { args } => ("ENTRYPOINT", join_words(args), String::new()),
        Instruction::Cmd { args } => ("CMD", join_words(args), String::new()),
    }
}

/// The instruction an op and its inputs' text make; `at` names the row in
/// errors (`dockerfile.instructions[2]`). The server checks the values; a
/// port and words must parse here first.
fn instruction(op: &str, first: &str, second: &str, at: &str) -> Result<Instruction, ApiError> {
    let text = |s: &str| s.trim().to_owned();
    Ok(match op {
        "FROM" => Instruction::From { image: text(first) },
        // An empty default is none: the text cannot tell them apart.
        "ARG" => Instruction::Arg {
            name: text(first),
            default: (!second.is_empty()).then(|| second.to_owned()),
        },
        "RUN" => Instruction::Run {
            command: text(first),
        },
        "COPY" => Instruction::Copy {
            source: text(first),
            destination: text(second),
        },
        "ADD" => Instruction::Add {
            source: text(first),
            destination: text(second),
        },
        "WORKDIR" => Instruction::Workdir { path: text(first) },
        // A value is taken as typed: its spaces may matter.
        "ENV" => Instruction::Env {
            name: text(first),
            value: second.to_owned(),
        },
        "LABEL" => Instruction::Label {
            name: text(first),
            value: second.to_owned(),
        },
        "EXPOSE" => Instruction::Expose {
            port: first
                .trim()
                .parse()
                .map_err(|_| ApiError::invalid(&format!("{at}.port"), "must be a port, 1–65535"))?,
            protocol: if second.trim().is_empty() {
                "tcp".to_owned()
            } else {
                text(second)
            },
        },
        "USER" => Instruction::User { user: text(first) },
        "VOLUME" => Instruction::Volume { path: text(first) },
        "ENTRYPOINT" | "CMD" => {
            let args =
                split_words(first).map_err(|m| ApiError::invalid(&format!("{at}.args"), m))?;
            if op == "CMD" {
                Instruction::Cmd { args }
            } else {
                Instruction::Entrypoint { args }
            }
        }
        other => {
            return Err(ApiError::invalid(
                &format!("{at}.op"),
                format!("{other} is not an instruction"),
            ));
        }
    })
}

/// One instruction row; `key` follows it as rows move.
#[derive(Debug, Clone, Copy)]
struct InstructionRow {
    key: u32,
    op: RwSignal<String>,
    first: RwSignal<String>,
    second: RwSignal<String>,
}

impl InstructionRow {
    fn new(key: u32, op: &str, first: String, second: String) -> Self {
        Self {
            key,
            op: RwSignal::new(op.to_owned()),
            first: RwSignal::new(first),
            second: RwSignal::new(second),
        }
    }

    /// Makes the caller run again when the row changes.
    fn track(&self) {
        self.op.track();
        self.first.track();
        self.second.track();
    }

    /// Whether nothing is typed in it yet (EXPOSE's protocol is chosen,
    /// not typed).
    fn blank(&self) -> bool {
        let empty = |s: RwSignal<String>| s.with_untracked(|s| s.trim().is_empty());
        empty(self.first) && (empty(self.second) || self.op.with_untracked(|op| op == "EXPOSE"))
    }

    /// The instruction it makes, as row `i` of the form.
    fn instruction(&self, i: usize) -> Result<Instruction, ApiError> {
        instruction(
            &self.op.get_untracked(),
            &self.first.get_untracked(),
            &self.second.get_untracked(),
            &format!("{ROWS}[{i}]"),
        )
    }
}

/// The error with the fields `rename` renames said under their new name,
/// each message after the prefix it gives.
fn renamed(mut error: ApiError, rename: impl Fn(&str) -> Option<(String, String)>) -> ApiError {
    let detail = &mut error.0;
    if let Some(field) = detail.field.clone()
        && let Some((to, prefix)) = rename(&field)
    {
        // The message starts with the old name.
        let said = detail
            .message
            .strip_prefix(field.as_str())
            .and_then(|m| m.strip_prefix(": "))
            .unwrap_or(&detail.message);
        detail.message = format!("{prefix}{said}");
        detail.field = Some(to);
    }
    for also in &mut detail.also {
        if let Some((to, prefix)) = rename(&also.field) {
            also.message = format!("{prefix}{}", also.message);
            also.field = to;
        }
    }
    error
}

/// The preview's error in the form's terms: the preview sends only the
/// rows with something typed in them (`rows` holds their places), so its
/// `instructions[1]` is the form's `dockerfile.instructions[rows[1]]`.
fn reindex(error: ApiError, rows: &[usize]) -> ApiError {
    renamed(error, |field| {
        let rest = field.strip_prefix("instructions")?;
        let moved = rest
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .and_then(|(j, tail)| Some((rows.get(j.parse::<usize>().ok()?)?, tail)));
        let to = match moved {
            Some((i, tail)) => format!("{ROWS}[{i}]{tail}"),
            None => format!("{ROWS}{rest}"),
        };
        Some((to, String::new()))
    })
}

/// The error with each argument's (`build_args.NAME`) said of them all,
/// `NAME: …`: the rows have no input of each name to show it at.
fn fold_args(error: ApiError) -> ApiError {
    renamed(error, |field| {
        let name = field.strip_prefix(ARGS)?.strip_prefix('.')?;
        Some((ARGS.to_owned(), format!("{name}: ")))
    })
}

/// Whether an error names the instruction rows or one of them.
fn names_rows(error: &ApiError) -> bool {
    error
        .field_errors()
        .iter()
        .any(|(field, _)| field.starts_with(ROWS))
}

// ---- the project form ----

/// A source's user name and password as the form holds them. The
/// password is never shown: empty keeps the stored one.
#[derive(Debug, Clone, Copy)]
struct Credentials {
    username: RwSignal<String>,
    password: RwSignal<String>,
    forget: RwSignal<bool>,
    stored: bool,
}

impl Credentials {
    fn new(username: Option<&str>, stored: bool) -> Self {
        Self {
            username: RwSignal::new(username.unwrap_or_default().to_owned()),
            password: RwSignal::new(String::new()),
            forget: RwSignal::new(false),
            stored,
        }
    }

    fn username(&self) -> Option<String> {
        let name = self.username.get_untracked().trim().to_owned();
        (!name.is_empty()).then_some(name)
    }

    /// What to send: none keeps the stored password, `""` removes it.
    fn password(&self) -> Option<String> {
        if self.forget.get_untracked() {
            return Some(String::new());
        }
        let password = self.password.get_untracked();
        (!password.is_empty()).then_some(password)
    }
}

/// One name = value row; `key` follows it as rows go.
#[derive(Debug, Clone, Copy)]
struct Pair {
    key: u32,
    name: RwSignal<String>,
    value: RwSignal<String>,
}

/// Build arguments as rows of name = value.
#[derive(Debug, Clone, Copy)]
struct Pairs {
    rows: RwSignal<Vec<Pair>>,
    next: StoredValue<u32>,
}

/// The field build arguments are in, in both forms.
const ARGS: &str = "build_args";

impl Pairs {
    fn new(args: &BTreeMap<String, String>) -> Self {
        let pairs = Self {
            rows: RwSignal::new(Vec::new()),
            next: StoredValue::new(0),
        };
        for (name, value) in args {
            pairs.add(name.clone(), value.clone());
        }
        pairs
    }

    fn add(self, name: String, value: String) {
        let key = self.next.get_value();
        self.next.set_value(key + 1);
        self.rows.update(|rows| {
            rows.push(Pair {
                key,
                name: RwSignal::new(name),
                value: RwSignal::new(value),
            });
        });
    }

    /// The arguments; rows left empty are no argument.
    fn map(self) -> Result<BTreeMap<String, String>, ApiError> {
        let mut args = BTreeMap::new();
        for pair in self.rows.get_untracked() {
            let name = pair.name.get_untracked().trim().to_owned();
            let value = pair.value.get_untracked();
            if name.is_empty() {
                if value.is_empty() {
                    continue;
                }
                return Err(ApiError::invalid(
                    ARGS,
                    format!("the value {value:?} has no name"),
                ));
            }
            if args.insert(name.clone(), value).is_some() {
                return Err(ApiError::invalid(ARGS, format!("{name} is given twice")));
            }
        }
        Ok(args)
    }
}

/// How the form makes the Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Text,
    Git,
    Form,
}

impl SourceKind {
    const ALL: [Self; 3] = [Self::Text, Self::Git, Self::Form];

    fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Git => "git",
            Self::Form => "form",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Text => "Text",
            Self::Git => "Git",
            Self::Form => "Instructions",
        }
    }
}

/// The git source's inputs.
#[derive(Debug, Clone, Copy)]
struct GitEditor {
    url: RwSignal<String>,
    git_ref: RwSignal<String>,
    path: RwSignal<String>,
    credentials: Credentials,
}

/// The deploy media's inputs; `kind` is empty for none.
#[derive(Debug, Clone, Copy)]
struct MediaEditor {
    kind: RwSignal<String>,
    url: RwSignal<String>,
    revision: RwSignal<String>,
    subdirectory: RwSignal<String>,
    target: RwSignal<String>,
    credentials: Credentials,
}

impl MediaEditor {
    fn new(media: Option<&Media>) -> Self {
        let text = |f: fn(&Media) -> String| RwSignal::new(media.map(f).unwrap_or_default());
        Self {
            kind: text(|m| media_kind(m.kind).to_owned()),
            url: text(|m| m.url.clone()),
            revision: text(|m| m.revision.clone()),
            subdirectory: text(|m| m.subdirectory.clone()),
            target: text(|m| m.target.clone()),
            credentials: Credentials::new(
                media.and_then(|m| m.username.as_deref()),
                media.is_some_and(|m| m.password_set),
            ),
        }
    }

    fn input(&self) -> Option<MediaInput> {
        let kind = match self.kind.get_untracked().as_str() {
            "git" => MediaKind::Git,
            "svn" => MediaKind::Svn,
            _ => return None,
        };
        let text = |s: RwSignal<String>| s.get_untracked().trim().to_owned();
        Some(MediaInput {
            kind,
            url: text(self.url),
            revision: text(self.revision),
            subdirectory: if kind == MediaKind::Git {
                text(self.subdirectory)
            } else {
                String::new()
            },
            target: text(self.target),
            username: self.credentials.username(),
            password: self.credentials.password(),
        })
    }
}

/// The project being created (`id: None`) or edited.
#[derive(Debug, Clone, Copy)]
struct ProjectEditor {
    id: Option<i64>,
    repository: RwSignal<String>,
    description: RwSignal<String>,
    kind: RwSignal<SourceKind>,
    text: RwSignal<String>,
    git: GitEditor,
    rows: RwSignal<Vec<InstructionRow>>,
    next_row: StoredValue<u32>,
    media: MediaEditor,
    args: Pairs,
    error: RwSignal<Option<ApiError>>,
}

impl ProjectEditor {
    fn new(project: Option<&ImageProject>) -> Self {
        let source = project.map(|p| &p.dockerfile);
        let (kind, text) = match source {
            Some(DockerfileSource::Text { dockerfile }) => (SourceKind::Text, dockerfile.clone()),
            Some(DockerfileSource::Git { .. }) => (SourceKind::Git, String::new()),
            // A new project starts on the instruction form, at its FROM.
            Some(DockerfileSource::Form { .. }) | None => (SourceKind::Form, String::new()),
        };
        let git = match source {
            Some(DockerfileSource::Git { repository, path }) => GitEditor {
                url: RwSignal::new(repository.url.clone()),
                git_ref: RwSignal::new(repository.git_ref.clone()),
                path: RwSignal::new(path.clone()),
                credentials: Credentials::new(
                    repository.username.as_deref(),
                    repository.password_set,
                ),
            },
            _ => GitEditor {
                url: RwSignal::new(String::new()),
                git_ref: RwSignal::new("main".to_owned()),
                path: RwSignal::new("Dockerfile".to_owned()),
                credentials: Credentials::new(None, false),
            },
        };
        let rows: Vec<InstructionRow> = match source {
            Some(DockerfileSource::Form { instructions }) => instructions
                .iter()
                .zip(0..)
                .map(|(i, key)| {
                    let (op, first, second) = row_text(i);
                    InstructionRow::new(key, op, first, second)
                })
                .collect(),
            _ => vec![InstructionRow::new(0, "FROM", String::new(), String::new())],
        };
        Self {
            id: project.map(|p| p.id),
            repository: RwSignal::new(project.map(|p| p.repository.clone()).unwrap_or_default()),
            description: RwSignal::new(project.map(|p| p.description.clone()).unwrap_or_default()),
            kind: RwSignal::new(kind),
            text: RwSignal::new(text),
            git,
            next_row: StoredValue::new(u32::try_from(rows.len()).unwrap_or(u32::MAX)),
            rows: RwSignal::new(rows),
            media: MediaEditor::new(project.and_then(|p| p.media.as_ref())),
            args: Pairs::new(&project.map(|p| p.build_args.clone()).unwrap_or_default()),
            error: RwSignal::new(None),
        }
    }

    /// Adds a row at the end: a FROM first, then RUNs.
    fn add_row(self) {
        let key = self.next_row.get_value();
        self.next_row.set_value(key + 1);
        self.rows.update(|rows| {
            let op = if rows.is_empty() { "FROM" } else { "RUN" };
            rows.push(InstructionRow::new(key, op, String::new(), String::new()));
        });
    }

    /// Swaps row `i` with the one after it.
    fn swap(self, i: usize) {
        self.rows.update(|rows| {
            if i + 1 < rows.len() {
                rows.swap(i, i + 1);
            }
        });
    }

    /// What the preview renders: the rows with something typed in them,
    /// and their places in the form.
    fn preview(self) -> Result<(RenderInput, Vec<usize>), ApiError> {
        let mut instructions = Vec::new();
        let mut places = Vec::new();
        for (i, row) in self.rows.get_untracked().iter().enumerate() {
            if !row.blank() {
                instructions.push(row.instruction(i)?);
                places.push(i);
            }
        }
        Ok((RenderInput { instructions }, places))
    }

    fn input(self) -> Result<ImageProjectInput, ApiError> {
        let text = |s: RwSignal<String>| s.get_untracked().trim().to_owned();
        let dockerfile = match self.kind.get_untracked() {
            SourceKind::Text => DockerfileInput::Text {
                dockerfile: self.text.get_untracked(),
            },
            SourceKind::Git => DockerfileInput::Git {
                repository: GitSourceInput {
                    url: text(self.git.url),
                    git_ref: text(self.git.git_ref),
                    username: self.git.credentials.username(),
                    password: self.git.credentials.password(),
                },
                path: Some(text(self.git.path))
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "Dockerfile".to_owned()),
            },
            SourceKind::Form => DockerfileInput::Form {
                instructions: self
                    .rows
                    .get_untracked()
                    .iter()
                    .enumerate()
                    .map(|(i, row)| row.instruction(i))
                    .collect::<Result<_, _>>()?,
            },
        };
        Ok(ImageProjectInput {
            repository: text(self.repository),
            description: self.description.get_untracked(),
            dockerfile,
            media: self.media.input(),
            build_args: self.args.map()?,
        })
    }
}

/// The fields the project form shows next to their inputs.
const PLACED: [&str; 17] = [
    "repository",
    "description",
    "dockerfile.dockerfile",
    "dockerfile.url",
    "dockerfile.ref",
    "dockerfile.path",
    "dockerfile.username",
    "dockerfile.password",
    ROWS,
    "media",
    "media.url",
    "media.revision",
    "media.subdirectory",
    "media.target",
    "media.username",
    "media.password",
    ARGS,
];

/// A labelled one-line input of a nested field (`media.url`), whose
/// element id is not made from the field's name.
#[component]
fn Line(
    field: &'static str,
    id: &'static str,
    label: &'static str,
    value: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
    #[prop(optional)] hint: &'static str,
    #[prop(optional)] placeholder: &'static str,
) -> impl IntoView {
    view! {
        <Labelled field id label error hint>
            <input id=id name=field type="text" autocomplete="off" placeholder=placeholder bind:value=value/>
        </Labelled>
    }
}

/// A user name and a write-only password: a stored one is kept unless a
/// new one is typed or "forget" is ticked.
#[component]
fn CredentialFields(
    credentials: Credentials,
    /// The API fields, e.g. `("media.username", "media.password")`.
    fields: (&'static str, &'static str),
    /// The element ids: user name, password, forget.
    ids: (&'static str, &'static str, &'static str),
    error: RwSignal<Option<ApiError>>,
) -> impl IntoView {
    let stored = credentials.stored;
    let (username_field, password_field) = fields;
    let (username_id, password_id, forget_id) = ids;
    view! {
        <div class="row">
            <Line field=username_field id=username_id label="User name" value=credentials.username error
                hint="for a private repository"/>
            <Labelled field=password_field id=password_id label="Password" error
                hint=if stored { "stored: leave empty to keep it" } else { "never shown again once saved" }>
                <input id=password_id name=password_field type="password" autocomplete="new-password"
                    placeholder=if stored { "•••••• (stored)" } else { "" }
                    data-stored=stored.to_string()
                    disabled=move || credentials.forget.get()
                    bind:value=credentials.password/>
            </Labelled>
        </div>
        {stored.then(|| view! {
            <label class="check"><input id=forget_id type="checkbox" bind:checked=credentials.forget/>" Forget the stored password"</label>
        })}
    }
}

/// Rows of build arguments, with the server's error about them.
#[component]
fn PairsEditor(
    pairs: Pairs,
    /// The fieldset's element id.
    id: &'static str,
    legend: &'static str,
    error: RwSignal<Option<ApiError>>,
    /// A hint under the rows.
    #[prop(into, optional)]
    hint: String,
) -> impl IntoView {
    let message = move || {
        let said: Vec<String> = error
            .get()
            .map(|e| e.field_errors())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(field, message)| (field == ARGS).then_some(message))
            .collect();
        (!said.is_empty()).then(|| said.join("; "))
    };
    view! {
        <fieldset class="pairs" id=id class:invalid=move || message().is_some()>
            <legend>{legend}</legend>
            {move || message().map(|m| view! { <p class="field-error" data-field=ARGS>{m}</p> })}
            <table class="table compact">
                <tbody>
                    <For each=move || pairs.rows.get() key=|p| p.key children=move |p: Pair| view! {
                        <tr class="build-arg">
                            <td><input class="build-arg-name" type="text" placeholder="NAME" bind:value=p.name/></td>
                            <td><input class="build-arg-value" type="text" placeholder="value" bind:value=p.value/></td>
                            <td class="actions"><button type="button" class="ghost danger remove"
                                on:click=move |_| pairs.rows.update(|rows| rows.retain(|r| r.key != p.key))>"Remove"</button></td>
                        </tr>
                    }/>
                </tbody>
            </table>
            <button type="button" class="ghost add-build-arg" on:click=move |_| pairs.add(String::new(), String::new())>"Add argument"</button>
            {(!hint.is_empty()).then(|| view! { <p class="hint">{hint}</p> })}
        </fieldset>
    }
}

/// The registry's base images as FROM names them (`host/base/name:tag`).
async fn base_images() -> Result<Vec<String>, ApiError> {
    let host = api::registry().await?.host;
    let mut images = Vec::new();
    for repository in api::repositories_under("base/").await? {
        for tag in api::all_image_tags(&repository.name).await? {
            images.push(format!("{host}/{}:{}", repository.name, tag.tag));
        }
    }
    Ok(images)
}

/// The projects, with their newest builds.
#[component]
pub(crate) fn ProjectsPage() -> impl IntoView {
    let page = RwSignal::new(1_u32);
    let listing = LocalResource::new(move || {
        let page = page.get();
        async move { api::image_projects(page, PageQuery::DEFAULT_PER_PAGE).await }
    });
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    let error = load_error(listing);
    view! {
        <ImagesTabs/>
        <div class="page-head">
            <h1>"Image projects"</h1>
            <p class="subtitle">
                "How images are built into the registry: a Dockerfile written here, taken from git or composed of instructions, with code fetched into its build."
            </p>
        </div>
        <div class="toolbar">
            <A href="/images/projects/new" attr:id="new-project" attr:class="button-link primary">"New project"</A>
        </div>
        <ErrorBanner error all=true/>
        <table id="projects-table" class="table">
            <thead><tr><th>"Repository"</th><th>"Dockerfile"</th><th>"Last build"</th><th>"When (UTC)"</th></tr></thead>
            <tbody>
                <For each=move || current.get().map(|p| p.items).unwrap_or_default()
                    key=|p| (p.id, p.updated_at.clone(), p.last_build.as_ref().map(|b| (b.id, b.state)))
                    children=move |p: ImageProject| {
                        let href = format!("/images/projects/{}", p.id);
                        let last = p.last_build.clone();
                        let when = last.as_ref().map(|b| short_time(b.finished_at.as_deref().unwrap_or(&b.created_at)));
                        let (name, kind) = (p.repository.clone(), source_kind(&p.dockerfile));
                        view! {
                            <tr class="project" data-id=p.id.to_string() data-repository=p.repository>
                                <td class="name"><A href=href>{name}</A>
                                    <div class="muted">{p.description}</div></td>
                                <td><span class="badge source-kind">{kind}</span></td>
                                <td class="last-build">{last.map_or_else(|| "never built".into_any(), |b| view! {
                                    {state_badge(b.state)}" "
                                    <A href=format!("/images/builds/{}", b.id)>{format!("{} (#{})", b.tag, b.id)}</A>
                                }.into_any())}</td>
                                <td>{when.unwrap_or_default()}</td>
                            </tr>
                        }
                    }/>
            </tbody>
        </table>
        <Show when=move || current.get().is_some_and(|p| p.items.is_empty())>
            <p class="empty">"No projects yet: make one to build images here."</p>
        </Show>
        <Pager page=current current=page noun=("project", "projects")/>
    }
}

/// Creates a project (`/images/projects/new`) or edits one
/// (`/images/projects/{id}/edit`).
#[component]
pub(crate) fn ProjectEditPage() -> impl IntoView {
    let id = id_param();
    let project = LocalResource::new(move || {
        let id = id.get();
        async move {
            match id {
                Some(id) => api::image_project(id).await.map(Some),
                None => Ok(None),
            }
        }
    });
    let error = load_error(project);
    view! {
        <ImagesTabs/>
        <ErrorBanner error all=true/>
        {move || project.get().and_then(Result::ok).map(|p| view! { <ProjectForm project=p/> })}
    }
}

/// The project form, with the instructions' Dockerfile rendered beside
/// them as they are typed.
#[component]
fn ProjectForm(project: Option<ImageProject>) -> impl IntoView {
    let ed = ProjectEditor::new(project.as_ref());
    let bases = LocalResource::new(base_images);
    let bases = Signal::derive(move || bases.get().and_then(Result::ok).unwrap_or_default());
    let preview = RwSignal::new(project.as_ref().and_then(|p| p.rendered.clone()));
    let preview_error = RwSignal::new(None::<ApiError>);
    // Each change asks again; an answer to an older one is dropped.
    let asked = StoredValue::new(0_u64);
    Effect::new(move || {
        if ed.kind.get() != SourceKind::Form {
            return;
        }
        ed.rows
            .with(|rows| rows.iter().for_each(InstructionRow::track));
        asked.update_value(|n| *n += 1);
        let ticket = asked.get_value();
        let current = move || asked.try_get_value() == Some(ticket);
        set_timeout(
            move || {
                if !current() {
                    return;
                }
                let (input, places) = match ed.preview() {
                    Ok(preview) => preview,
                    Err(e) => return preview_error.set(Some(e)),
                };
                if input.instructions.is_empty() {
                    preview_error.set(None);
                    return preview.set(None);
                }
                spawn_local(async move {
                    let answer = api::render_dockerfile(&input).await;
                    if !current() {
                        return;
                    }
                    match answer {
                        Ok(rendered) => {
                            preview_error.set(None);
                            preview.set(Some(rendered.dockerfile));
                        }
                        Err(e) => preview_error.set(Some(reindex(e, &places))),
                    }
                });
            },
            std::time::Duration::from_millis(300),
        );
    });
    let navigate = StoredValue::new_local(use_navigate());
    // Errors about the rows show at the rows, with the preview's.
    let refused = move |e: ApiError| {
        let e = fold_args(e);
        if names_rows(&e) {
            preview_error.set(Some(e.clone()));
        }
        show_form_error(ed.error, e);
    };
    let save = move |ev: SubmitEvent| {
        ev.prevent_default();
        let input = match ed.input() {
            Ok(input) => input,
            Err(e) => return refused(e),
        };
        spawn_local(async move {
            match api::save_image_project(ed.id, &input).await {
                Ok(saved) => navigate.with_value(|go| {
                    go(
                        &format!("/images/projects/{}", saved.id),
                        Default::default(),
                    );
                }),
                Err(e) => refused(e),
            }
        });
    };
    let (title, back) = match &project {
        Some(p) => (
            format!("Edit {}", p.repository),
            format!("/images/projects/{}", p.id),
        ),
        None => (
            "New image project".to_owned(),
            "/images/projects".to_owned(),
        ),
    };
    let back_label = if project.is_some() {
        "‹ Project"
    } else {
        "‹ Projects"
    };
    let cancel = back.clone();
    let error = ed.error;
    let media = ed.media;
    view! {
        <p class="crumbs"><A href=back>{back_label}</A></p>
        <div class="page-head"><h1>{title}</h1></div>
        <form id="project-form" class="panel" novalidate on:submit=save>
            <ErrorBanner error all=true shown=PLACED.iter().map(|f| (*f).to_owned()).collect()/>
            <div class="row">
                <Field field="repository" id_prefix="project" label="Repository" value=ed.repository error
                    hint="where its images go in the registry, e.g. shop/web (not under base/)"/>
                <Field field="description" id_prefix="project" label="Description" value=ed.description error/>
            </div>
            <div class="field">
                <label>"Dockerfile"</label>
                <div class="segmented" role="radiogroup" id="project-source">
                    {SourceKind::ALL.into_iter().map(|k| view! {
                        <button type="button" id=format!("source-{}", k.as_str())
                            class:selected=move || ed.kind.get() == k
                            on:click=move |_| ed.kind.set(k)>{k.label()}</button>
                    }).collect_view()}
                </div>
            </div>
            {move || match ed.kind.get() {
                SourceKind::Text => view! {
                    <Labelled field="dockerfile.dockerfile" id="project-dockerfile-text" label="Dockerfile" error
                        hint="the build context holds it and the deploy media">
                        <textarea id="project-dockerfile-text" class="code" rows="14" spellcheck="false"
                            bind:value=ed.text></textarea>
                    </Labelled>
                }.into_any(),
                SourceKind::Git => view! {
                    <div class="row">
                        <Line field="dockerfile.url" id="project-git-url" label="Repository URL" value=ed.git.url error
                            placeholder="https://git.example.com/shop/web.git"/>
                        <Line field="dockerfile.ref" id="project-git-ref" label="Ref" value=ed.git.git_ref error
                            hint="a branch, a tag, refs/… or a full commit"/>
                    </div>
                    <Line field="dockerfile.path" id="project-git-path" label="Dockerfile path" value=ed.git.path error
                        hint="its directory is the build context; the Dockerfile is known once a build fetches it"/>
                    <CredentialFields credentials=ed.git.credentials
                        fields=("dockerfile.username", "dockerfile.password")
                        ids=("project-git-username", "project-git-password", "project-git-forget") error/>
                }.into_any(),
                SourceKind::Form => view! {
                    <div class="composer">
                        <InstructionsEditor editor=ed preview_error bases/>
                        <aside class="preview">
                            <h3>"Dockerfile"</h3>
                            <pre class="code" id="rendered-dockerfile" class:stale=move || preview_error.get().is_some()>
                                {move || preview.get().unwrap_or_default()}
                            </pre>
                            {move || preview_error.get().map(|e| view! {
                                <p class="hint" id="preview-error">{if e.field_errors().is_empty() {
                                    e.message()
                                } else {
                                    "Not rendered: see the marked instruction.".to_owned()
                                }}</p>
                            })}
                        </aside>
                    </div>
                }.into_any(),
            }}
            <fieldset class="media" id="project-media">
                <legend>"Deploy media"</legend>
                <Labelled field="media" id="media-kind" label="Fetched into the build context from" error>
                    <select id="media-kind" on:change=move |ev| media.kind.set(event_target_value(&ev))>
                        {[("", "nothing"), ("git", "a git repository"), ("svn", "a subversion URL")].into_iter().map(|(k, label)| view! {
                            <option value=k selected=move || media.kind.get() == k>{label}</option>
                        }).collect_view()}
                    </select>
                </Labelled>
                <Show when=move || !media.kind.get().is_empty()>
                    <div class="row">
                        <Line field="media.url" id="media-url" label="URL" value=media.url error/>
                        <Line field="media.revision" id="media-revision" label="Revision" value=media.revision error
                            hint="git: a branch, tag or commit; svn: a number or HEAD"/>
                    </div>
                    <div class="row">
                        <Show when=move || media.kind.get() == "git">
                            <Line field="media.subdirectory" id="media-subdirectory" label="Subdirectory" value=media.subdirectory error
                                hint="empty: the whole repository"/>
                        </Show>
                        <Line field="media.target" id="media-target" label="Target" value=media.target error
                            hint="a relative path in the build context, e.g. app"/>
                    </div>
                    <CredentialFields credentials=media.credentials
                        fields=("media.username", "media.password")
                        ids=("media-username", "media-password", "media-forget") error/>
                </Show>
            </fieldset>
            <PairsEditor pairs=ed.args id="project-build-args" legend="Build arguments" error
                hint="ARG values every build gets; a build may override them"/>
            <div class="buttons">
                <A href=cancel attr:class="button-link">"Cancel"</A>
                <button id="project-save" type="submit" class="primary">"Save"</button>
            </div>
        </form>
    }
}

/// The instruction rows: an op each with its inputs, moved, added and
/// removed; the server's error about a row shows at it.
#[component]
fn InstructionsEditor(
    editor: ProjectEditor,
    preview_error: RwSignal<Option<ApiError>>,
    bases: Signal<Vec<String>>,
) -> impl IntoView {
    let list_error = move || {
        preview_error.get().and_then(|e| {
            e.field_errors()
                .into_iter()
                .find_map(|(field, message)| (field == ROWS).then_some(message))
        })
    };
    view! {
        <fieldset class="instructions">
            <legend>"Instructions"</legend>
            {move || list_error().map(|m| view! { <p class="field-error" data-field=ROWS>{m}</p> })}
            <table class="table compact" id="instructions">
                <tbody>
                    <For each=move || editor.rows.get() key=|r| r.key children=move |row: InstructionRow| view! {
                        <InstructionLine editor row preview_error bases/>
                    }/>
                </tbody>
            </table>
            <button type="button" id="add-instruction" class="ghost" on:click=move |_| editor.add_row()>"Add instruction"</button>
        </fieldset>
    }
}

/// One instruction row.
#[component]
fn InstructionLine(
    editor: ProjectEditor,
    row: InstructionRow,
    preview_error: RwSignal<Option<ApiError>>,
    bases: Signal<Vec<String>>,
) -> impl IntoView {
    let index = Memo::new(move |_| {
        editor
            .rows
            .with(|rows| rows.iter().position(|r| r.key == row.key))
            .unwrap_or(0)
    });
    let last = move || index.get() + 1 >= editor.rows.with(Vec::len);
    // What the server said about this row: (its attribute, or "" for the
    // row itself; the message).
    let said = Memo::new(move |_| {
        let at = format!("{ROWS}[{}]", index.get());
        preview_error
            .get()
            .map(|e| e.field_errors())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(field, message)| {
                let rest = field.strip_prefix(&at)?;
                let attr = if rest.is_empty() {
                    ""
                } else {
                    rest.strip_prefix('.')?
                };
                // One of a list's items (`args[1]`) is said at the list.
                Some(match attr.find('[') {
                    Some(at) => (
                        attr[..at].to_owned(),
                        format!("{}: {message}", api::human_field(&attr[at..])),
                    ),
                    None => (attr.to_owned(), message),
                })
            })
            .collect::<Vec<_>>()
    });
    let cell_error = move |attr: &'static str| {
        said.with(|s| s.iter().find(|(a, _)| a == attr).map(|(_, m)| m.clone()))
    };
    // Said of the row, or of an attribute its op has no input for.
    let row_error = move || {
        let op = row.op.get();
        let shown = slots(&op);
        let others: Vec<String> = said
            .get()
            .into_iter()
            .filter(|(attr, _)| attr != "op" && !shown.iter().any(|(s, _)| s == attr))
            .map(|(attr, m)| {
                if attr.is_empty() {
                    m
                } else {
                    format!("{attr}: {m}")
                }
            })
            .collect();
        (!others.is_empty()).then(|| others.join("; "))
    };
    let input = move |n: usize, attr: &'static str, placeholder: &'static str| {
        let value = if n == 0 { row.first } else { row.second };
        let class = format!("instruction-{attr}");
        match attr {
            "protocol" => view! {
                <select class=class on:change=move |ev| value.set(event_target_value(&ev))>
                    {["tcp", "udp"].into_iter().map(|p| view! {
                        <option value=p selected=move || value.with(|v| v == p || (v.is_empty() && p == "tcp"))>{p}</option>
                    }).collect_view()}
                </select>
            }.into_any(),
            "image" => view! {
                <div class="from-picker">
                    <select class="instruction-base" on:change=move |ev| {
                        let picked = event_target_value(&ev);
                        if !picked.is_empty() {
                            value.set(picked);
                        }
                    }>
                        <option value="" selected=move || !bases.with(|b| value.with(|v| b.contains(v)))>
                            {move || if bases.with(Vec::is_empty) { "No base images in the registry's base/" } else { "A base image of the registry…" }}
                        </option>
                        {move || bases.get().into_iter().map(|image| {
                            let (picked, label) = (image.clone(), image.clone());
                            view! { <option value=image selected=move || value.with(|v| *v == picked)>{label}</option> }
                        }).collect_view()}
                    </select>
                    <input class=class type="text" placeholder=placeholder bind:value=value/>
                </div>
            }.into_any(),
            _ => view! { <input class=class type="text" placeholder=placeholder bind:value=value/> }.into_any(),
        }
    };
    view! {
        <tr class="instruction" data-index=move || index.get().to_string() data-op=move || row.op.get()
            class:invalid=move || !said.with(Vec::is_empty)>
            <td class="op" class:invalid=move || cell_error("op").is_some()>
                <select class="instruction-op" on:change=move |ev| row.op.set(event_target_value(&ev))>
                    {OPS.into_iter().map(|op| view! {
                        <option value=op selected=move || row.op.with(|o| o == op)>{op}</option>
                    }).collect_view()}
                </select>
                {move || cell_error("op").map(|m| view! {
                    <p class="field-error" data-field=format!("{ROWS}[{}].op", index.get())>{m}</p>
                })}
            </td>
            {move || {
                let op = row.op.get();
                let shown = slots(&op);
                let wide = shown.len() == 1;
                shown.iter().enumerate().map(|(n, &(attr, placeholder))| view! {
                    <td class="value" colspan=if wide { "2" } else { "1" } class:invalid=move || cell_error(attr).is_some()>
                        {input(n, attr, placeholder)}
                        {move || cell_error(attr).map(|m| view! {
                            <p class="field-error" data-field=format!("{ROWS}[{}].{attr}", index.get())>{m}</p>
                        })}
                    </td>
                }).collect_view()
            }}
            <td class="actions">
                <button type="button" class="ghost move-up" title="Move up" disabled=move || index.get() == 0
                    on:click=move |_| editor.swap(index.get_untracked().saturating_sub(1))>"↑"</button>
                <button type="button" class="ghost move-down" title="Move down" disabled=last
                    on:click=move |_| editor.swap(index.get_untracked())>"↓"</button>
                <button type="button" class="ghost danger remove"
                    on:click=move |_| editor.rows.update(|rows| rows.retain(|r| r.key != row.key))>"Remove"</button>
                {move || row_error().map(|m| view! {
                    <p class="field-error row-error" data-field=format!("{ROWS}[{}]", index.get())>{m}</p>
                })}
            </td>
        </tr>
    }
}

// ---- a project and its builds ----

/// Builds per page of a project's history.
const BUILDS_PER_PAGE: u32 = 20;

/// One project: where its Dockerfile and media come from, the Dockerfile,
/// a build form and its builds.
#[component]
pub(crate) fn ProjectPage() -> impl IntoView {
    let id = id_param();
    let project = LocalResource::new(move || {
        let id = id.get();
        async move {
            match id {
                Some(id) => api::image_project(id).await,
                None => Err(ApiError::local("no such project")),
            }
        }
    });
    let error = load_error(project);
    let page = RwSignal::new(1_u32);
    let reload = RwSignal::new(0_u32);
    let builds = LocalResource::new(move || {
        reload.track();
        let (id, page) = (id.get(), page.get());
        async move {
            match id {
                Some(id) => api::project_builds(id, page, BUILDS_PER_PAGE).await,
                None => Err(ApiError::local("no such project")),
            }
        }
    });
    let listed = Signal::derive(move || builds.get().and_then(Result::ok));
    let builds_error = load_error(builds);
    // A build under way changes its row: the page is read again meanwhile.
    every(3, move || {
        let busy = builds
            .get_untracked()
            .and_then(Result::ok)
            .is_some_and(|p| p.items.iter().any(|b| !b.state.is_final()));
        if busy {
            reload.update(|n| *n += 1);
        }
    });
    let deleting = RwSignal::new(None::<Doomed>);
    let navigate = StoredValue::new_local(use_navigate());
    view! {
        <ImagesTabs/>
        <p class="crumbs"><A href="/images/projects">"‹ Projects"</A></p>
        <ErrorBanner error all=true/>
        {move || project.get().and_then(Result::ok).map(|p| {
            let project_id = p.id;
            let doomed = Doomed { id: p.id, name: p.repository.clone() };
            let (heading, description) = (p.repository.clone(), p.description.clone());
            let defaults = p.build_args.clone();
            view! {
                <div class="page-head">
                    <h1 id="project-repository">{heading}</h1>
                    <p class="subtitle">{description}</p>
                </div>
                <div class="toolbar">
                    <A href=format!("/images/projects/{project_id}/edit") attr:id="edit-project" attr:class="button-link">"Edit"</A>
                    <button id="delete-project" class="ghost danger" on:click=move |_| deleting.set(Some(doomed.clone()))>"Delete"</button>
                </div>
                <ProjectFacts project=p/>
                <BuildForm project_id defaults/>
            }
        })}
        <section class="panel">
            <h2>"Builds"</h2>
            <ErrorBanner error=builds_error all=true/>
            <table id="builds-table" class="table">
                <thead><tr>
                    <th>"#"</th><th>"Tag"</th><th>"State"</th><th>"By"</th><th>"Asked (UTC)"</th>
                    <th>"Source / media"</th><th>"Digest"</th><th>"Size"</th><th>"Took"</th>
                </tr></thead>
                <tbody>
                    <For each=move || listed.get().map(|p| p.items).unwrap_or_default()
                        key=|b| (b.id, b.state, b.digest.clone())
                        children=move |b: ImageBuild| {
                            let href = format!("/images/builds/{}", b.id);
                            let revisions = [b.source_revision.as_deref(), b.media_revision.as_deref()]
                                .map(|r| r.map_or_else(|| "—".to_owned(), short_digest))
                                .join(" / ");
                            let tag = b.tag.clone();
                            view! {
                                <tr class="build" data-id=b.id.to_string() data-state=b.state.as_str() data-tag=b.tag>
                                    <td><A href=href>{format!("#{}", b.id)}</A></td>
                                    <td>{tag}</td>
                                    <td>{state_badge(b.state)}</td>
                                    <td>{b.requested_by.clone()}</td>
                                    <td>{short_time(&b.created_at)}</td>
                                    <td><code>{revisions}</code></td>
                                    <td><code title=b.digest.clone().unwrap_or_default()>{b.digest.as_deref().map(short_digest).unwrap_or_default()}</code></td>
                                    <td>{b.size.map(human_bytes).unwrap_or_default()}</td>
                                    <td>{b.duration_ms.map(took).unwrap_or_default()}</td>
                                </tr>
                            }
                        }/>
                </tbody>
            </table>
            <Show when=move || listed.get().is_some_and(|p| p.items.is_empty())>
                <p class="empty">"Not built yet."</p>
            </Show>
            <Pager page=listed current=page noun=("build", "builds")/>
        </section>
        <ConfirmDelete noun="project" target=deleting delete=api::delete_image_project
            note="Its builds' history goes with it; the images it pushed stay in the registry."
            on_deleted=Callback::new(move |()| navigate.with_value(|go| go("/images/projects", Default::default())))/>
    }
}

/// Where a project's Dockerfile and media come from, its arguments, and
/// the Dockerfile when it is known before a build.
#[component]
fn ProjectFacts(project: ImageProject) -> impl IntoView {
    let p = project;
    let registry = link(&p.repository, None);
    view! {
        <dl class="facts" id="project-facts">
            <dt>"Images"</dt><dd><A href=registry>{p.repository.clone()}</A></dd>
            <dt>"Dockerfile"</dt>
            <dd id="project-source" data-kind=source_kind(&p.dockerfile)>{source_text(&p.dockerfile)}</dd>
            <dt>"Deploy media"</dt>
            <dd id="project-media">{p.media.as_ref().map_or_else(|| "none".to_owned(), media_text)}</dd>
            <dt>"Build arguments"</dt><dd id="project-args"><code>{args_text(&p.build_args)}</code></dd>
            <dt>"Created"</dt><dd>{format!("{} by {}", short_time(&p.created_at), p.created_by)}</dd>
            <dt>"Changed"</dt><dd>{short_time(&p.updated_at)}</dd>
        </dl>
        {p.rendered.clone().map(|text| view! {
            <h3>"Dockerfile"</h3>
            <pre class="code" id="project-dockerfile">{text}</pre>
        })}
    }
}

/// Starts a build of a project and opens its page.
#[component]
fn BuildForm(project_id: i64, defaults: BTreeMap<String, String>) -> impl IntoView {
    let tag = RwSignal::new("latest".to_owned());
    let args = Pairs::new(&BTreeMap::new());
    let no_cache = RwSignal::new(false);
    let error = RwSignal::new(None::<ApiError>);
    let starting = RwSignal::new(false);
    let navigate = StoredValue::new_local(use_navigate());
    let start = move |ev: SubmitEvent| {
        ev.prevent_default();
        let build_args = match args.map() {
            Ok(map) => map,
            Err(e) => return error.set(Some(e)),
        };
        let input = ImageBuildInput {
            tag: tag.get_untracked().trim().to_owned(),
            build_args,
            no_cache: no_cache.get_untracked(),
        };
        starting.set(true);
        spawn_local(async move {
            match api::start_build(project_id, &input).await {
                Ok(build) => navigate.with_value(|go| {
                    go(&format!("/images/builds/{}", build.id), Default::default());
                }),
                Err(e) => {
                    starting.set(false);
                    error.set(Some(fold_args(e)));
                }
            }
        });
    };
    let hint = if defaults.is_empty() {
        "ARG values for this build".to_owned()
    } else {
        format!(
            "over the project's {}; a row of the same name overrides it",
            args_text(&defaults)
        )
    };
    view! {
        <section class="panel">
            <h2>"Build"</h2>
            <form id="build-form" novalidate on:submit=start>
                <ErrorBanner error all=true shown=vec!["tag".into(), ARGS.into()]/>
                <Field field="tag" id_prefix="build" label="Tag" value=tag error
                    hint="built and pushed; a tag of that name is replaced"/>
                <PairsEditor pairs=args id="build-args" legend="Build arguments" error hint/>
                <label class="check"><input id="build-no-cache" type="checkbox" bind:checked=no_cache/>" Without the layer cache"</label>
                <div class="buttons">
                    <button id="build-start" type="submit" class="primary" disabled=move || starting.get()>
                        {move || if starting.get() { "Starting…" } else { "Build" }}
                    </button>
                </div>
            </form>
        </section>
    }
}

// ---- a build ----

/// The build log's `<pre>`. Pieces are added to the page as they come
/// rather than the whole log drawn again for each; it keeps its end in
/// view unless the reader has scrolled up.
#[derive(Clone, Copy)]
struct LogView {
    pre: NodeRef<html::Pre>,
    /// Bytes of log shown, where the next piece must start.
    bytes: StoredValue<u64>,
}

/// The part of `piece` after the `have` bytes already shown; none when it
/// has nothing new, or starts beyond them (the read to the end fills that).
fn unseen(have: u64, piece: &BuildLog) -> Option<&str> {
    let skip = usize::try_from(have.checked_sub(piece.offset)?).ok()?;
    piece.text.get(skip..).filter(|text| !text.is_empty())
}

impl LogView {
    fn new() -> Self {
        Self {
            pre: NodeRef::new(),
            bytes: StoredValue::new(0),
        }
    }

    fn clear(self) {
        if let Some(pre) = self.pre.get_untracked() {
            pre.set_text_content(None);
        }
        self.bytes.set_value(0);
    }

    /// Adds what the piece has that is not shown yet; whether it did.
    fn append(self, piece: &BuildLog) -> bool {
        let (Some(have), Some(Some(pre))) =
            (self.bytes.try_get_value(), self.pre.try_get_untracked())
        else {
            return false;
        };
        let Some(text) = unseen(have, piece) else {
            return false;
        };
        let following = pre.scroll_top() + pre.client_height() >= pre.scroll_height() - 8;
        if pre.append_with_str_1(text).is_err() {
            return false;
        }
        self.bytes.set_value(have + text.len() as u64);
        if following {
            pre.set_scroll_top(pre.scroll_height());
        }
        true
    }

    /// Reads the log from what is shown to its end.
    async fn read_to_end(self, id: i64) -> Result<(), ApiError> {
        while let Some(have) = self.bytes.try_get_value() {
            let piece = api::build_log(id, have).await?;
            let end = piece.offset + piece.text.len() as u64 >= piece.total;
            if !self.append(&piece) || end {
                break;
            }
        }
        Ok(())
    }
}

/// Follows `/api/v1/image-builds/{id}/events`: `build` replaces the build
/// shown, `log` adds to the log. The server ends the stream after a final
/// state; then, as when the stream breaks, [`poll`] reads the rest.
fn follow(
    id: i64,
    build: RwSignal<Option<ImageBuild>>,
    log: LogView,
    error: RwSignal<Option<ApiError>>,
) {
    let Ok(source) = web_sys::EventSource::new(&api::build_events_url(id)) else {
        poll(id, build, log, error);
        return;
    };
    let on = |name: &str, handle: Box<dyn Fn(&str)>| api::on_event(&source, name, handle);
    on(
        "build",
        Box::new(move |data| {
            if let Ok(fresh) = serde_json::from_str::<ImageBuild>(data) {
                build.try_set(Some(fresh));
            }
        }),
    );
    on(
        "log",
        Box::new(move |data| {
            if let Ok(piece) = serde_json::from_str::<BuildLog>(data) {
                log.append(&piece);
            }
        }),
    );
    let ended = source.clone();
    let on_error = Closure::<dyn Fn()>::new(move || {
        // The browser would connect again and get the whole log again.
        ended.close();
        poll(id, build, log, error);
    });
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
    on_cleanup(move || source.close());
}

/// Reads the build, then its log to the end, every 2 s until it has
/// ended: the log read after a final state is whole.
fn poll(
    id: i64,
    build: RwSignal<Option<ImageBuild>>,
    log: LogView,
    error: RwSignal<Option<ApiError>>,
) {
    spawn_local(async move {
        let ended = match api::image_build(id).await {
            Ok(fresh) => {
                let ended = fresh.state.is_final();
                if build.try_set(Some(fresh)).is_some() {
                    // The page went away.
                    return;
                }
                ended
            }
            Err(e) if matches!(e.0.code, ErrorCode::NotFound | ErrorCode::Forbidden) => {
                error.try_set(Some(e));
                return;
            }
            // Not reachable now: asked again.
            Err(_) => false,
        };
        let read = log.read_to_end(id).await.is_ok();
        if !(ended && read) {
            set_timeout(
                move || poll(id, build, log, error),
                std::time::Duration::from_secs(2),
            );
        }
    });
}

/// One build: its state, image and log, live; cancelled while under way.
#[component]
pub(crate) fn BuildPage() -> impl IntoView {
    let id = id_param();
    let build = RwSignal::new(None::<ImageBuild>);
    let error = RwSignal::new(None::<ApiError>);
    let log = LogView::new();
    Effect::new(move || match id.get() {
        Some(id) => {
            // Another build's page: not the last one's log meanwhile.
            build.set(None);
            log.clear();
            follow(id, build, log, error);
        }
        None => error.set(Some(ApiError::local("no such build"))),
    });
    let cancel = move |_| {
        let Some(id) = id.get_untracked() else { return };
        spawn_local(async move {
            match api::cancel_build(id).await {
                Ok(fresh) => {
                    error.set(None);
                    // The stream may have told a later state already.
                    build.update(|held| {
                        if !held.as_ref().is_some_and(|b| b.state.is_final()) {
                            *held = Some(fresh);
                        }
                    });
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <ImagesTabs/>
        <ErrorBanner error all=true/>
        {move || build.get().map(|b| {
            let state = b.state;
            let project = format!("/images/projects/{}", b.project_id);
            let tag = (state == BuildState::Succeeded).then(|| link(&b.repository, Some(&b.tag)));
            let revisions = [("source", &b.source_revision), ("media", &b.media_revision)]
                .into_iter()
                .filter_map(|(what, r)| r.as_ref().map(|r| format!("{what} {r}")))
                .collect::<Vec<_>>();
            view! {
                <p class="crumbs"><A href=project attr:id="build-project">{format!("‹ {}", b.repository)}</A></p>
                <div class="page-head">
                    <h1>{format!("Build #{} · {}:{}", b.id, b.repository, b.tag)}</h1>
                    <p class="subtitle">
                        <span id="build-state" class=format!("badge state-{}", state.as_str()) data-state=state.as_str()>{state.as_str()}</span>
                        {format!(" asked by {} at {}", b.requested_by, short_time(&b.created_at))}
                    </p>
                </div>
                <div class="toolbar">
                    {(!state.is_final()).then(|| view! {
                        <button id="build-cancel" class="danger" on:click=cancel>"Cancel"</button>
                    })}
                    {tag.map(|href| view! {
                        <A href=href attr:id="build-tag-link" attr:class="button-link">"Open the tag in the registry"</A>
                    })}
                </div>
                <dl class="facts" id="build-facts">
                    <dt>"Image"</dt><dd><code id="build-image">{b.image.clone()}</code></dd>
                    <dt>"Digest"</dt><dd><code id="build-digest">{b.digest.clone().unwrap_or_else(|| "—".to_owned())}</code></dd>
                    <dt>"Size"</dt><dd id="build-size">{b.size.map_or_else(|| "—".to_owned(), |s| format!("{} compressed", human_bytes(s)))}</dd>
                    <dt>"Took"</dt><dd id="build-duration">{b.duration_ms.map_or_else(|| "—".to_owned(), took)}</dd>
                    <dt>"Revisions"</dt><dd id="build-revisions"><code>{if revisions.is_empty() { "—".to_owned() } else { revisions.join(" · ") }}</code></dd>
                    <dt>"Arguments"</dt>
                    <dd><code>{args_text(&b.build_args)}</code>{b.no_cache.then_some(" · without the layer cache")}</dd>
                    {(!b.message.is_empty()).then(|| view! {
                        <dt>"Message"</dt><dd id="build-message">{b.message.clone()}</dd>
                    })}
                </dl>
            }
        })}
        <h2>"Log"</h2>
        <pre class="code build-log" id="build-log" node_ref=log.pre></pre>
    }
}

#[cfg(test)]
mod tests {
    use dcp_api_types::{ErrorDetail, FieldError};

    use super::*;

    #[test]
    fn words_split_as_a_shell_does_and_join_back_the_same() {
        assert_eq!(
            split_words(r#"sh -c 'echo "hi there"' a\ b "x\"y" ''"#).unwrap(),
            ["sh", "-c", "echo \"hi there\"", "a b", "x\"y", ""]
        );
        assert!(split_words("echo 'open").is_err());
        let words: Vec<String> = ["/bin/sh", "-c", "echo it's done", "", "plain"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(split_words(&join_words(&words)).unwrap(), words);
    }

    #[test]
    fn a_row_makes_its_instruction_and_shows_it_again() {
        let made = instruction("CMD", "/bin/sh -c 'sleep 1'", "", "x").unwrap();
        assert_eq!(
            made,
            Instruction::Cmd {
                args: vec!["/bin/sh".into(), "-c".into(), "sleep 1".into()]
            }
        );
        let (op, first, _) = row_text(&made);
        assert_eq!((op, first.as_str()), ("CMD", "/bin/sh -c 'sleep 1'"));
        let arg = instruction("ARG", "FLAVOUR", "", "x").unwrap();
        assert_eq!(
            arg,
            Instruction::Arg {
                name: "FLAVOUR".into(),
                default: None
            }
        );
        let refused = instruction("EXPOSE", "http", "", "dockerfile.instructions[3]").unwrap_err();
        assert_eq!(
            refused.0.field.as_deref(),
            Some("dockerfile.instructions[3].port")
        );
        assert_eq!(
            instruction("EXPOSE", "80", "", "x").unwrap(),
            Instruction::Expose {
                port: 80,
                protocol: "tcp".into()
            }
        );
    }

    #[test]
    fn the_previews_error_names_the_forms_row() {
        let error = ApiError(ErrorDetail {
            code: ErrorCode::ValidationFailed,
            message: "instructions[1].command: must not be empty".into(),
            field: Some("instructions[1].command".into()),
            request_id: None,
            also: vec![FieldError {
                field: "instructions".into(),
                message: "the first must be FROM".into(),
            }],
        });
        let placed = reindex(error, &[0, 2]);
        assert_eq!(
            placed.field_errors(),
            [
                (
                    "dockerfile.instructions[2].command".to_owned(),
                    "must not be empty".to_owned()
                ),
                (
                    "dockerfile.instructions".to_owned(),
                    "the first must be FROM".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn an_arguments_error_is_said_of_the_rows() {
        let error = ApiError::invalid("build_args.1x", "build_args.1x: must be a name");
        assert_eq!(
            fold_args(error).field_errors(),
            [("build_args".to_owned(), "1x: must be a name".to_owned())]
        );
    }

    #[test]
    fn a_log_piece_adds_only_what_is_not_shown() {
        let piece = BuildLog {
            offset: 4,
            text: "efgh".into(),
            total: 8,
        };
        assert_eq!(unseen(4, &piece), Some("efgh"));
        assert_eq!(unseen(6, &piece), Some("gh"));
        assert_eq!(unseen(8, &piece), None);
        assert_eq!(unseen(2, &piece), None, "a gap waits for the read");
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(took(850), "850 ms");
        assert_eq!(took(12_340), "12.3 s");
        assert_eq!(took(245_000), "4 min 05 s");
    }
}

//! The manual's rules for task templates: what a step may be, and what
//! expand, shrink and deploy templates must contain — checked on save and
//! again when a template is bound to a pool or run on one.

use dcp_api_types::{LeftoverMachines, StepSpec, TaskTemplateInput, TemplatePurpose, builtin};

use crate::{
    store::TaskTemplateChange,
    validate::{self, Invalid},
};

/// Longest template or step name.
pub const NAME_MAX: usize = 64;
/// Most steps in a template.
pub const STEPS_MAX: usize = 50;
/// Most retries of a step.
pub const RETRIES_MAX: u32 = 10;
/// Longest delay between attempts.
pub const RETRY_DELAY_MAX_SECS: u32 = 3600;
/// Longest time one attempt may take.
pub const TIMEOUT_MAX_SECS: u32 = 86_400;
/// An attempt's time limit when the step names none.
pub const DEFAULT_TIMEOUT_SECS: u32 = 600;

const BUILTINS: &[&str] = &[
    builtin::CREATE_VM,
    builtin::RETURN_VM,
    builtin::STOP_SERVICE,
    builtin::REGISTER,
    builtin::UNREGISTER,
];

fn is(step: &StepSpec, name: &str) -> bool {
    step.group_id.is_none() && step.name == name
}

/// Checks a template's fields and the rules of its purpose.
pub fn template_change(input: TaskTemplateInput) -> Result<TaskTemplateChange, Invalid> {
    // The form's fields are checked together, so one answer names them all.
    let mut checks = validate::Checks::default();
    checks.check(validate::identifier("name", &input.name, NAME_MAX));
    checks.check(validate::max_chars("description", &input.description, 1024));
    if input.steps.is_empty() || input.steps.len() > STEPS_MAX {
        checks.check(Err(Invalid::new(
            "steps",
            format!("must have 1 to {STEPS_MAX} steps"),
        )));
    } else {
        let mut steps = validate::Checks::default();
        for (i, step) in input.steps.iter().enumerate() {
            steps.check(check_step(i, step));
        }
        // The purpose's rules read the steps' names: only once they are sound.
        if steps.is_clear() {
            steps.check(purpose_rules(input.purpose, &input.steps));
        }
        checks.check(steps.finish());
    }
    checks.finish()?;
    Ok(TaskTemplateChange {
        name: input.name,
        description: input.description,
        purpose: input.purpose.as_str().to_owned(),
        steps: serde_json::to_string(&input.steps).unwrap_or_default(),
    })
}

fn check_step(i: usize, step: &StepSpec) -> Result<(), Invalid> {
    let field = |f: &str| format!("steps[{i}].{f}");
    if step.name.trim().is_empty() || step.name.chars().count() > NAME_MAX {
        return Err(Invalid::new(
            field("name"),
            format!("must be 1 to {NAME_MAX} characters"),
        ));
    }
    if step.group_id.is_none() && !step.starts_service() && !BUILTINS.contains(&step.name.as_str())
    {
        return Err(Invalid::new(
            field("name"),
            format!(
                "{:?} is not a built-in step (create_vm, return_vm, start_service…, \
                 stop_service, register, unregister); name a group_id to run a command group",
                step.name
            ),
        ));
    }
    if step.group_id.is_none() && !step.params.is_empty() {
        return Err(Invalid::new(
            field("params"),
            "only command-group steps take parameters",
        ));
    }
    if step.leftover_machines != LeftoverMachines::Release && !is(step, builtin::CREATE_VM) {
        return Err(Invalid::new(
            field("leftover_machines"),
            "only a create_vm step makes machines to release or hand to the pool",
        ));
    }
    if step.retries > RETRIES_MAX {
        return Err(Invalid::new(
            field("retries"),
            format!("must be at most {RETRIES_MAX}"),
        ));
    }
    if step.retry_delay_secs > RETRY_DELAY_MAX_SECS {
        return Err(Invalid::new(
            field("retry_delay_secs"),
            format!("must be at most {RETRY_DELAY_MAX_SECS}"),
        ));
    }
    if step
        .timeout_secs
        .is_some_and(|t| t == 0 || t > TIMEOUT_MAX_SECS)
    {
        return Err(Invalid::new(
            field("timeout_secs"),
            format!("must be between 1 and {TIMEOUT_MAX_SECS}"),
        ));
    }
    Ok(())
}

/// The manual's rules per purpose.
fn purpose_rules(purpose: TemplatePurpose, steps: &[StepSpec]) -> Result<(), Invalid> {
    let has = |name: &str| steps.iter().position(|s| is(s, name));
    let starts_service = steps.iter().any(StepSpec::starts_service);
    let misplaced = |name: &str, why: &str| -> Result<(), Invalid> {
        match has(name) {
            Some(i) => Err(Invalid::new(format!("steps[{i}].name"), why.to_owned())),
            None => Ok(()),
        }
    };
    match purpose {
        TemplatePurpose::Expand => {
            if !steps.first().is_some_and(|s| is(s, builtin::CREATE_VM)) {
                return Err(Invalid::new(
                    "steps[0].name",
                    "an expand template must start with create_vm",
                ));
            }
            if !starts_service {
                return Err(Invalid::new(
                    "steps",
                    "an expand template must have a start_service step",
                ));
            }
            misplaced(builtin::RETURN_VM, "an expand template may not return_vm")?;
        }
        TemplatePurpose::Shrink => {
            if !steps.last().is_some_and(|s| is(s, builtin::RETURN_VM)) {
                return Err(Invalid::new(
                    format!("steps[{}].name", steps.len() - 1),
                    "a shrink template must end with return_vm",
                ));
            }
            misplaced(builtin::CREATE_VM, "a shrink template may not create_vm")?;
        }
        TemplatePurpose::Deploy => {
            if !starts_service {
                return Err(Invalid::new(
                    "steps",
                    "a deploy template must have a start_service step",
                ));
            }
            misplaced(builtin::CREATE_VM, "a deploy template may not create_vm")?;
            misplaced(builtin::RETURN_VM, "a deploy template may not return_vm")?;
        }
        TemplatePurpose::Adhoc => {
            misplaced(
                builtin::CREATE_VM,
                "an ad-hoc template works on existing nodes; expand makes new ones",
            )?;
        }
    }
    if let Some(i) = steps.iter().skip(1).position(|s| is(s, builtin::CREATE_VM)) {
        return Err(Invalid::new(
            format!("steps[{}].name", i + 1),
            "create_vm can only be the first step",
        ));
    }
    if let Some(i) = steps
        .iter()
        .take(steps.len().saturating_sub(1))
        .position(|s| is(s, builtin::RETURN_VM))
    {
        return Err(Invalid::new(
            format!("steps[{i}].name"),
            "return_vm can only be the last step",
        ));
    }
    Ok(())
}

/// Checks a template against a pool it is bound to or run on: the right
/// purpose, and load-balancer steps only where the pool has a binding.
pub fn binding(
    field: &str,
    expected: TemplatePurpose,
    name: &str,
    purpose: TemplatePurpose,
    steps: &[StepSpec],
    pool: &str,
    has_discovery: bool,
) -> Result<(), Invalid> {
    if purpose != expected {
        return Err(Invalid::new(
            field.to_owned(),
            format!(
                "task template {name} is for {}, not for {}",
                purpose.as_str(),
                expected.as_str()
            ),
        ));
    }
    if !has_discovery
        && let Some(step) = steps
            .iter()
            .find(|s| is(s, builtin::REGISTER) || is(s, builtin::UNREGISTER))
    {
        return Err(Invalid::new(
            field.to_owned(),
            format!(
                "task template {name} uses {} but pool {pool} has no service-discovery binding",
                step.name
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(purpose: TemplatePurpose, steps: &[&str]) -> TaskTemplateInput {
        TaskTemplateInput {
            name: "t".into(),
            description: String::new(),
            purpose,
            steps: steps.iter().map(|s| StepSpec::builtin(s)).collect(),
        }
    }

    fn refusal(purpose: TemplatePurpose, steps: &[&str]) -> (String, String) {
        let e = template_change(input(purpose, steps)).unwrap_err();
        (e.field.to_string(), e.message)
    }

    #[test]
    fn the_manuals_rules_per_purpose() {
        use TemplatePurpose::*;
        assert!(template_change(input(Expand, &["create_vm", "start_service_web"])).is_ok());
        assert!(template_change(input(Shrink, &["stop_service", "return_vm"])).is_ok());
        assert!(template_change(input(Deploy, &["stop_service", "start_service"])).is_ok());
        let (field, message) = refusal(Expand, &["start_service", "create_vm"]);
        assert_eq!(field, "steps[0].name");
        assert!(message.contains("start with create_vm"), "{message}");
        assert!(refusal(Expand, &["create_vm"]).1.contains("start_service"));
        assert!(
            refusal(Shrink, &["return_vm", "stop_service"])
                .1
                .contains("end with return_vm")
        );
        assert!(
            refusal(Deploy, &["stop_service"])
                .1
                .contains("start_service")
        );
        assert!(refusal(Adhoc, &["create_vm"]).1.contains("existing nodes"));
        assert!(refusal(Adhoc, &["reboot"]).1.contains("not a built-in"));
    }

    #[test]
    fn load_balancer_steps_need_a_binding() {
        let steps = vec![
            StepSpec::builtin("create_vm"),
            StepSpec::builtin("start_service"),
            StepSpec::builtin("register"),
        ];
        let e = binding(
            "expand_template_id",
            TemplatePurpose::Expand,
            "lb-expand",
            TemplatePurpose::Expand,
            &steps,
            "web",
            false,
        )
        .unwrap_err();
        assert!(e.message.contains("no service-discovery binding"), "{e:?}");
        let e = binding(
            "shrink_template_id",
            TemplatePurpose::Shrink,
            "lb-expand",
            TemplatePurpose::Expand,
            &steps,
            "web",
            true,
        )
        .unwrap_err();
        assert!(e.message.contains("is for expand, not for shrink"), "{e:?}");
    }

    #[test]
    fn only_create_vm_chooses_what_becomes_of_its_machines() {
        let mut steps = input(TemplatePurpose::Expand, &["create_vm", "start_service"]);
        steps.steps[0].leftover_machines = LeftoverMachines::HandToPool;
        assert!(template_change(steps.clone()).is_ok());
        steps.steps[1].leftover_machines = LeftoverMachines::HandToPool;
        let e = template_change(steps).unwrap_err();
        assert_eq!(e.field.to_string(), "steps[1].leftover_machines");
        assert!(e.message.contains("only a create_vm step"), "{e:?}");
    }
}

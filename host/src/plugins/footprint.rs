//! What instantiating a component allocates: core module instances, linear
//! memories and tables, counted from its binary before it is compiled.
//!
//! The pooling allocator has a fixed number of slots of each kind for all
//! calls together; a component that instantiated dozens of modules or
//! memories would take many of them on every call, so plugins are held to a
//! small share ([`MAX_CORE_INSTANCES`], [`MAX_MEMORIES`], [`MAX_TABLES`]) and
//! one exceeding it is refused at upload. A Rust plugin built for
//! `wasm32-wasip2` has 3 core instances, 1 memory and 2 tables.

use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentInstance, ComponentOuterAliasKind,
    ComponentTypeRef, Encoding, Instance, Parser, Payload,
};

/// Core module instances one plugin call may create.
pub(crate) const MAX_CORE_INSTANCES: u32 = 32;
/// Linear memories one plugin call may create (they share the call's memory limit).
pub(crate) const MAX_MEMORIES: u32 = 4;
/// Tables one plugin call may create.
pub(crate) const MAX_TABLES: u32 = 8;

/// What one instantiation of a component (or core module) creates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Footprint {
    /// Core module instances.
    pub(crate) core_instances: u64,
    /// Linear memories defined (not imported) by those instances.
    pub(crate) memories: u64,
    /// Tables defined by those instances.
    pub(crate) tables: u64,
}

impl std::ops::AddAssign for Footprint {
    fn add_assign(&mut self, other: Self) {
        self.core_instances = self.core_instances.saturating_add(other.core_instances);
        self.memories = self.memories.saturating_add(other.memories);
        self.tables = self.tables.saturating_add(other.tables);
    }
}

/// A component or core module being read, with what instantiating it costs.
enum Frame {
    Module(Footprint),
    Component {
        /// The core module index space: what instantiating each costs;
        /// `None` for one that cannot be counted (imported, or taken out of
        /// an instance).
        modules: Vec<Option<Footprint>>,
        /// The component index space, likewise.
        components: Vec<Option<Footprint>>,
        /// What the component's own instantiations add up to.
        total: Footprint,
    },
}

const UNCOUNTABLE: &str = "it instantiates a module or component that it imports or takes from an instance, so what it would allocate cannot be counted";

impl Footprint {
    /// Counts what instantiating the component `wasm` creates, nested
    /// components included (each as often as it is instantiated).
    pub(crate) fn of(wasm: &[u8]) -> Result<Self, String> {
        let mut stack: Vec<Frame> = Vec::new();
        for payload in Parser::new(0).parse_all(wasm) {
            let payload = payload.map_err(|e| format!("not a valid component: {e}"))?;
            match payload {
                Payload::Version { encoding, .. } => stack.push(match encoding {
                    Encoding::Module => Frame::Module(Footprint {
                        core_instances: 1,
                        ..Self::default()
                    }),
                    Encoding::Component => Frame::Component {
                        modules: Vec::new(),
                        components: Vec::new(),
                        total: Self::default(),
                    },
                }),
                Payload::MemorySection(reader) => {
                    if let Some(Frame::Module(f)) = stack.last_mut() {
                        f.memories += u64::from(reader.count());
                    }
                }
                Payload::TableSection(reader) => {
                    if let Some(Frame::Module(f)) = stack.last_mut() {
                        f.tables += u64::from(reader.count());
                    }
                }
                Payload::InstanceSection(reader) => {
                    for instance in reader {
                        let instance = instance.map_err(|e| e.to_string())?;
                        if let Instance::Instantiate { module_index, .. } = instance {
                            let (modules, _, total) = component(&mut stack)?;
                            *total += lookup(modules, module_index)?;
                        }
                    }
                }
                Payload::ComponentInstanceSection(reader) => {
                    for instance in reader {
                        let instance = instance.map_err(|e| e.to_string())?;
                        if let ComponentInstance::Instantiate {
                            component_index, ..
                        } = instance
                        {
                            let (_, components, total) = component(&mut stack)?;
                            *total += lookup(components, component_index)?;
                        }
                    }
                }
                Payload::ComponentImportSection(reader) => {
                    for import in reader {
                        let import = import.map_err(|e| e.to_string())?;
                        let (modules, components, _) = component(&mut stack)?;
                        match import.ty {
                            ComponentTypeRef::Module(_) => modules.push(None),
                            ComponentTypeRef::Component(_) => components.push(None),
                            _ => {}
                        }
                    }
                }
                Payload::ComponentAliasSection(reader) => {
                    for alias in reader {
                        let alias = alias.map_err(|e| e.to_string())?;
                        alias_into(&mut stack, &alias)?;
                    }
                }
                Payload::ComponentExportSection(reader) => {
                    for export in reader {
                        let export = export.map_err(|e| e.to_string())?;
                        let (modules, components, _) = component(&mut stack)?;
                        // An export is a new index for the same item.
                        match export.kind {
                            ComponentExternalKind::Module => {
                                let item = modules.get(index(export.index)).copied().flatten();
                                modules.push(item);
                            }
                            ComponentExternalKind::Component => {
                                let item = components.get(index(export.index)).copied().flatten();
                                components.push(item);
                            }
                            _ => {}
                        }
                    }
                }
                Payload::End(_) => {
                    let (cost, is_module) = match stack.pop() {
                        Some(Frame::Module(f)) => (f, true),
                        Some(Frame::Component { total, .. }) => (total, false),
                        None => return Err("not a valid component: unbalanced nesting".into()),
                    };
                    if stack.is_empty() {
                        return Ok(cost);
                    }
                    let (modules, components, _) = component(&mut stack)?;
                    if is_module {
                        modules.push(Some(cost));
                    } else {
                        components.push(Some(cost));
                    }
                }
                _ => {}
            }
        }
        Err("not a valid component: it ends early".into())
    }

    /// This footprint, if it is within a plugin's share of the slots; the
    /// limit it exceeds otherwise.
    pub(crate) fn check(self) -> Result<Self, String> {
        let over = |what: &str, n: u64, max: u32| {
            format!(
                "it creates {n} {what} when instantiated; a plugin may create at most {max} per call"
            )
        };
        if self.core_instances > u64::from(MAX_CORE_INSTANCES) {
            return Err(over(
                "core module instances",
                self.core_instances,
                MAX_CORE_INSTANCES,
            ));
        }
        if self.memories > u64::from(MAX_MEMORIES) {
            return Err(over("linear memories", self.memories, MAX_MEMORIES)
                + " (together they share the call's memory limit)");
        }
        if self.tables > u64::from(MAX_TABLES) {
            return Err(over("tables", self.tables, MAX_TABLES));
        }
        Ok(self)
    }
}

/// The index spaces of the component being read.
type Spaces<'a> = (
    &'a mut Vec<Option<Footprint>>,
    &'a mut Vec<Option<Footprint>>,
    &'a mut Footprint,
);

fn component(stack: &mut [Frame]) -> Result<Spaces<'_>, String> {
    match stack.last_mut() {
        Some(Frame::Component {
            modules,
            components,
            total,
        }) => Ok((modules, components, total)),
        _ => Err("not a valid component: a component section outside a component".into()),
    }
}

fn index(i: u32) -> usize {
    usize::try_from(i).unwrap_or(usize::MAX)
}

fn lookup(space: &[Option<Footprint>], i: u32) -> Result<Footprint, String> {
    space
        .get(index(i))
        .copied()
        .flatten()
        .ok_or_else(|| UNCOUNTABLE.to_owned())
}

/// Adds what an alias brings into the current component's module or
/// component index space.
fn alias_into(stack: &mut [Frame], alias: &ComponentAlias<'_>) -> Result<(), String> {
    let (item, into_modules) = match *alias {
        ComponentAlias::Outer {
            kind: kind @ (ComponentOuterAliasKind::CoreModule | ComponentOuterAliasKind::Component),
            count,
            index: i,
        } => {
            let depth = stack
                .len()
                .checked_sub(1 + index(count))
                .ok_or("not a valid component: an alias beyond the outermost component")?;
            let is_module = kind == ComponentOuterAliasKind::CoreModule;
            let item = match &stack[depth] {
                Frame::Component {
                    modules,
                    components,
                    ..
                } => if is_module { modules } else { components }
                    .get(index(i))
                    .copied()
                    .flatten(),
                Frame::Module(_) => None,
            };
            (item, is_module)
        }
        ComponentAlias::InstanceExport {
            kind: kind @ (ComponentExternalKind::Module | ComponentExternalKind::Component),
            ..
        } => (None, kind == ComponentExternalKind::Module),
        _ => return Ok(()),
    };
    let (modules, components, _) = component(stack)?;
    if into_modules {
        modules.push(item);
    } else {
        components.push(item);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footprint(wat: &str) -> Result<Footprint, String> {
        Footprint::of(&wat::parse_str(wat).unwrap())
    }

    #[test]
    fn counts_every_instantiation_nested_ones_included() {
        let counted = footprint(
            r#"(component
                (core module $m (memory 1) (table 1 funcref))
                (core module $bare)
                (core instance (instantiate $m))
                (core instance (instantiate $m))
                (core instance (instantiate $bare))
                (component $inner
                    (core module $n (memory 1) (memory 2))
                    (core instance (instantiate $n))
                    (component $deep
                        (alias outer $inner $n (core module $n2))
                        (core instance (instantiate $n2)))
                    (instance (instantiate $deep)))
                (instance (instantiate $inner))
                (instance (instantiate $inner))
                (export "again" (component $inner))
                (instance (instantiate 1)))"#,
        )
        .unwrap();
        // 3 here, and 2 for each of the three instances of $inner.
        assert_eq!(
            counted,
            Footprint {
                core_instances: 3 + 3 * 2,
                memories: 2 + 3 * 4,
                tables: 2,
            }
        );
        assert!(counted.check().unwrap_err().contains("14 linear memories"));
    }

    #[test]
    fn what_cannot_be_counted_is_refused() {
        let imported = footprint(
            r#"(component
                (import "m" (core module $m))
                (core instance (instantiate $m)))"#,
        )
        .unwrap_err();
        assert!(imported.contains("cannot be counted"), "{imported}");
        assert!(Footprint::of(b"\0asm\x0d\0\x01\0\x01").is_err());
    }

    #[test]
    fn limits_name_what_is_exceeded() {
        let within = Footprint {
            core_instances: 3,
            memories: 1,
            tables: 2,
        };
        assert_eq!(within.check(), Ok(within));
        for (f, what) in [
            (
                Footprint {
                    core_instances: 33,
                    ..within
                },
                "33 core module instances",
            ),
            (
                Footprint {
                    memories: 5,
                    ..within
                },
                "at most 4",
            ),
            (
                Footprint {
                    tables: 9,
                    ..within
                },
                "9 tables",
            ),
        ] {
            let message = f.check().unwrap_err();
            assert!(message.contains(what), "{message}");
        }
    }
}

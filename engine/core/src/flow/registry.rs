//! The set of loaded flows. A broken edit never takes a working flow away:
//! the new source is rejected and the previous good version stays in use.

use super::model::{Flow, Pos};
use super::parse::{Diagnostic, FlowErrors, parse_flow};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
struct Entry {
    flow: Arc<Flow>,
    version: u32,
    /// The text it was loaded from, so re-offering the same file is a no-op.
    source: String,
}

/// Flows keyed by the name of their source (usually the file path).
#[derive(Debug, Clone, Default)]
pub struct FlowSet {
    by_source: BTreeMap<String, Entry>,
}

/// What happened to one source handed to [`FlowSet::update`].
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The source parsed and checked; it is now in use.
    Loaded { id: String, version: u32 },
    /// The same text as the version in use; nothing changed.
    Unchanged { id: String, version: u32 },
    /// The source is broken; `kept` names the version still in use, if any.
    Rejected {
        errors: FlowErrors,
        kept: Option<(String, u32)>,
    },
}

impl FlowSet {
    pub fn new() -> FlowSet {
        FlowSet::default()
    }

    /// Offers a new version of the flow in `source_name`.
    pub fn update(&mut self, source_name: &str, source: &str) -> Update {
        if let Some(e) = self.by_source.get(source_name)
            && e.source == source
        {
            return Update::Unchanged {
                id: e.flow.id.clone(),
                version: e.version,
            };
        }
        let kept = self
            .by_source
            .get(source_name)
            .map(|e| (e.flow.id.clone(), e.version));
        let flow = match parse_flow(source_name, source) {
            Ok(f) => f,
            Err(errors) => return Update::Rejected { errors, kept },
        };
        if let Some((other, _)) = self
            .by_source
            .iter()
            .find(|(name, e)| name.as_str() != source_name && e.flow.id == flow.id)
        {
            let errors = FlowErrors(vec![Diagnostic {
                path: source_name.to_string(),
                pos: Pos { line: 1, col: 1 },
                message: format!("flow id {:?} is already used by {other}", flow.id),
            }]);
            return Update::Rejected { errors, kept };
        }
        let version = kept.as_ref().map_or(1, |k| k.1.saturating_add(1));
        let id = flow.id.clone();
        self.by_source.insert(
            source_name.to_string(),
            Entry {
                flow: Arc::new(flow),
                version,
                source: source.to_string(),
            },
        );
        Update::Loaded { id, version }
    }

    /// Forgets the flow loaded from `source_name` (its file was deleted).
    pub fn remove(&mut self, source_name: &str) -> bool {
        self.by_source.remove(source_name).is_some()
    }

    /// The flow in use with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Flow>> {
        self.by_source
            .values()
            .find(|e| e.flow.id == id)
            .map(|e| Arc::clone(&e.flow))
    }

    /// The version number of the flow in use with this id (1 for the first load).
    pub fn version(&self, id: &str) -> Option<u32> {
        self.by_source
            .values()
            .find(|e| e.flow.id == id)
            .map(|e| e.version)
    }

    pub fn ids(&self) -> Vec<String> {
        self.by_source.values().map(|e| e.flow.id.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.by_source.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty()
    }
}

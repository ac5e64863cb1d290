//! What the dry run finds in a request cache: the turn-opening requests it would answer.

use super::Cell;
use crate::message::Message;
use crate::provider::cache::{self, RequestCache};
use crate::provider::{CompletionRequest, Provider, ProviderConfig};
use crate::tools::ToolRegistry;

/// What the dry run looks up in a request cache: the cache, where each provider sends (the
/// base URL is part of a key), and `--seed`.
pub(crate) struct CacheLookup<'a> {
    pub cache: &'a RequestCache,
    pub providers: &'a ProviderConfig,
    pub seed: Option<u64>,
}

impl CacheLookup<'_> {
    /// How many of `cell`'s turn-opening requests (one per turn of each run) the cache would
    /// answer. A turn's first request is known when every turn before it was answered from
    /// the cache with text alone; a turn with tool calls needs its tools' results, unknown
    /// before they run, so the count stops there.
    pub(crate) fn answerable(&self, cell: &Cell, repetitions: &[u32], repeated: bool, registry: &ToolRegistry) -> u64 {
        let scenario = &cell.scenario;
        let base_url = match cell.spec.provider.as_str() {
            "local" => None,
            provider => self.providers.endpoints.get(provider).and_then(|e| self.providers.shown_base_url(e)),
        };
        let provider = crate::provider::cache::Offline { base_url };
        let specs = registry.with(&scenario.declared).specs(&scenario.tools);
        let mut sampling = scenario.sampling;
        sampling.seed = sampling.seed.or(self.seed);
        let mut hits = 0;
        for &repetition in repetitions {
            let mut messages: Vec<Message> =
                scenario.system.iter().map(|content| Message::System { content: content.clone() }).collect();
            for turn in &scenario.turns {
                messages.push(Message::User { content: turn.user.clone() });
                let request = CompletionRequest {
                    model: &cell.spec.name,
                    messages: &messages,
                    tools: &specs,
                    sampling: &sampling,
                    tool_choice: None,
                    on_text: None,
                };
                let (key, _) = cache::key(&cell.spec, provider.base_url(), &request, repeated.then_some(repetition));
                let Some(entry) = self.cache.read(&key) else { break };
                hits += 1;
                if !entry.response.tool_calls.is_empty() {
                    break;
                }
                messages.push(Message::Assistant {
                    content: Some(entry.response.content.unwrap_or_default()),
                    tool_calls: Vec::new(),
                });
            }
        }
        hits
    }
}

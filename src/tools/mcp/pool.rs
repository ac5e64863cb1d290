//! Which servers a run uses: its own, started for it, and the batch's shared ones, started
//! once on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::server::McpServer;
use super::{McpError, McpServerSpec};
use crate::record::ServerLog;
use crate::text::printable;
use crate::tools::Tool;

/// The servers of one run: those it started and the shared ones it uses, and the tools it
/// offers from them.
pub(crate) struct RunServers {
    pub(super) servers: Vec<Arc<McpServer>>,
    pub tools: Vec<Arc<dyn Tool>>,
}

impl RunServers {
    /// Starts the run's own servers and fetches the shared ones from `pool`. The first that
    /// cannot start, or lacks a tool in `include`, is the error; those already started are
    /// stopped.
    pub(crate) async fn start(
        specs: &[Arc<McpServerSpec>],
        pool: &McpPool,
        http: &reqwest::Client,
    ) -> Result<Self, McpError> {
        let mut run = Self { servers: Vec::new(), tools: Vec::new() };
        for spec in specs {
            let server = if spec.shared { pool.get(spec, http).await } else { McpServer::start(spec, http).await };
            let tools = server.and_then(|server| {
                let tools = server.tools(spec.include.as_deref());
                run.servers.push(server);
                tools
            });
            let tools = tools.and_then(|tools| {
                // Two tools of one name would go to the model twice, which providers refuse.
                match tools.iter().find(|tool| run.tools.iter().any(|t| t.name() == tool.name())) {
                    Some(tool) => {
                        Err(McpError::TwoOfOneName { name: printable(tool.name()), label: spec.label.clone() })
                    }
                    None => Ok(tools),
                }
            });
            match tools {
                Ok(tools) => run.tools.extend(tools),
                Err(err) => {
                    run.finish().await;
                    return Err(err);
                }
            }
        }
        Ok(run)
    }

    /// Stops the run's own servers; returns what the log keeps of every server it used.
    pub(crate) async fn finish(self) -> Vec<ServerLog> {
        let own = self.servers.iter().filter(|s| !s.shared);
        futures::future::join_all(own.map(|server| server.stop())).await;
        self.servers.iter().map(|server| server.log()).collect()
    }
}

/// A shared server: started once, by the first run that needs it.
pub(super) type Starting = Arc<tokio::sync::OnceCell<Result<Arc<McpServer>, McpError>>>;

/// The batch's shared servers, each started by the first run that needs it.
#[derive(Default)]
pub(crate) struct McpPool {
    pub(super) servers: Mutex<HashMap<String, Starting>>,
}

impl McpPool {
    pub(super) async fn get(&self, spec: &McpServerSpec, http: &reqwest::Client) -> Result<Arc<McpServer>, McpError> {
        let cell = self.servers.lock().expect("pool lock").entry(spec.identity()).or_default().clone();
        cell.get_or_init(|| McpServer::start(spec, http)).await.clone()
    }

    /// Stops every shared server.
    pub(crate) async fn shutdown(&self) {
        let cells: Vec<_> = self.servers.lock().expect("pool lock").drain().map(|(_, cell)| cell).collect();
        let started = cells.iter().filter_map(|cell| cell.get()?.as_ref().ok());
        futures::future::join_all(started.map(|server| server.stop())).await;
    }
}

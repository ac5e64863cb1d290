//! `agent:`: a user's own agent program, played in place of runner's agent loop (in a
//! scenario, or in `runner.yaml` as the default of every scenario).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::secret::Secrets;
use crate::text::{ExpandError, expand};

/// How long the agent may take to answer one user message when `timeout_secs` is not set.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(120);

/// An agent program: how to start it, one process per run.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    /// The program, then its arguments.
    pub command: Vec<String>,
    /// Extra environment, `${VAR}` already expanded.
    pub env: Vec<(String, String)>,
    /// The longest wait for one reply.
    pub timeout: Duration,
    /// Where it runs: the scenario file's directory.
    pub dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    command: Value,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    timeout_secs: Option<f64>,
}

impl AgentSpec {
    /// Reads an `agent:` entry; `env` expands `${VAR}` in its `env`. A variable that holds one
    /// of the batch's secrets (`secrets`) is refused: no key ever reaches an agent. The error
    /// says what was expected.
    pub(crate) fn parse(
        value: &Value,
        dir: PathBuf,
        env: &dyn Fn(&str) -> Option<String>,
        secrets: &Secrets,
    ) -> Result<Self, String> {
        let raw: RawAgent = serde_json::from_value(value.clone())
            .map_err(|err| format!("expected `agent: {{command: [PROGRAM, ARGS...], env, timeout_secs}}`: {err}"))?;
        let command: Option<Vec<String>> =
            raw.command.as_array().and_then(|items| items.iter().map(|i| i.as_str().map(str::to_owned)).collect());
        let command = match command {
            Some(command) if !command.is_empty() && !command[0].is_empty() => command,
            _ => {
                return Err(format!(
                    "expected the agent's `command` to be a list of strings (program, then arguments), found {}",
                    raw.command
                ));
            }
        };
        let timeout = match raw.timeout_secs {
            None => DEFAULT_AGENT_TIMEOUT,
            Some(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => Duration::from_secs_f64(secs),
            Some(secs) => return Err(format!("expected the agent's `timeout_secs` between 0 and 86400, found {secs}")),
        };
        let mut expanded = Vec::with_capacity(raw.env.len());
        for (name, template) in raw.env {
            let secret = secrets.variables().into_iter().find(|var| template.contains(&format!("${{{var}}}")));
            if let Some(var) = secret {
                return Err(format!(
                    "the agent's env `{name}` reads ${{{var}}}, which holds a key runner keeps from agents (the agent calls its model through runner, which adds the key)"
                ));
            }
            let value = expand(&template, env).map_err(|err| match err {
                ExpandError::Unset(var) => {
                    format!("the agent's env `{name}` needs ${{{var}}}: set {var} in the environment")
                }
                ExpandError::Unclosed(_) => format!("the agent's env `{name}`: {err}"),
            })?;
            expanded.push((name, value));
        }
        Ok(Self { command, env: expanded, timeout, dir })
    }

    /// The command line as the log and errors show it.
    pub fn command_line(&self) -> String {
        self.command.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<AgentSpec, String> {
        let env = |var: &str| (var == "LEVEL").then(|| "debug".to_owned());
        let secrets = Secrets::default();
        secrets.add_variable("OPENAI_API_KEY");
        AgentSpec::parse(&value, PathBuf::from("dir"), &env, &secrets)
    }

    #[test]
    fn an_entry_is_read_with_its_defaults() {
        let spec = parse(json!({"command": ["python3", "agent.py"], "env": {"LOG": "${LEVEL}"}})).unwrap();
        assert_eq!(spec.command, ["python3", "agent.py"]);
        assert_eq!(spec.env, [("LOG".to_owned(), "debug".to_owned())]);
        assert_eq!(spec.timeout, DEFAULT_AGENT_TIMEOUT);
        assert_eq!(spec.dir, PathBuf::from("dir"));
        assert_eq!(parse(json!({"command": ["a"], "timeout_secs": 2.5})).unwrap().timeout, Duration::from_millis(2500));
    }

    #[test]
    fn what_is_wrong_is_said() {
        let err = |value| parse(value).unwrap_err();
        assert!(err(json!({"command": "python3 agent.py"})).contains("a list of strings"));
        assert!(err(json!({"command": []})).contains("a list of strings"));
        assert!(err(json!({"command": ["a"], "timeout_secs": 0})).contains("between 0 and 86400"));
        assert!(err(json!({"command": ["a"], "shell": true})).contains("unknown field `shell`"));
        assert!(err(json!({"command": ["a"], "env": {"X": "${NOPE}"}})).contains("set NOPE"));
        let key = err(json!({"command": ["a"], "env": {"K": "Bearer ${OPENAI_API_KEY}"}}));
        assert!(key.contains("holds a key runner keeps from agents"), "{key}");
    }
}

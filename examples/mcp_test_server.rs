//! An MCP server over stdio for runner's tests, built with rmcp: the failure cases a real
//! server rarely shows on demand.
//!
//! Tools: `echo {message}`, `add {a, b}`, `count` (how many times `count` was called on this
//! server: tells a per-run server from a shared one), `fail` (an `isError` result), `crash`
//! (writes to stderr and exits mid-call), `sleep {secs}`.
//!
//! More tools: `env` (this process's environment, as `NAME=VALUE` lines), `chart` (a text
//! block, an image block and another text block), `big {bytes}` (a text block that long).
//!
//! Flags: `--slow-start SECS` (wait before answering anything), `--exit-at-start` (write to
//! stderr and exit 3), `--pid-file PATH` (append this process's id, to see that it ended),
//! `--with-child` (start a `sleep` that outlives this process unless its group is killed; its
//! id goes to the pid file too), `--escaping-child` (start a `sleep` in a session of its own,
//! out of the group; its id goes to the pid file), `--odd-names` (list tools whose names no
//! model API takes: `math.add`, `fs/read`, `fs_read`, a name with markup and a terminal
//! escape), `--only-echo` (list only `echo`, as a second server listing it would).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Value, json};

struct TestServer {
    counted: AtomicU64,
    odd_names: bool,
    only_echo: bool,
}

fn schema(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("schemas are objects"),
    }
}

fn text(text: impl Into<String>) -> CallToolResponse {
    CallToolResult::success(vec![ContentBlock::text(text)]).into()
}

impl rmcp::ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let object = |properties: Value, required: &[&str]| {
            schema(json!({"type": "object", "properties": properties, "required": required}))
        };
        if self.only_echo {
            return Ok(ListToolsResult::with_all_items(vec![Tool::new(
                "echo",
                "Echoes the message back.",
                object(json!({"message": {"type": "string"}}), &["message"]),
            )]));
        }
        if self.odd_names {
            return Ok(ListToolsResult::with_all_items(vec![
                Tool::new(
                    "math.add",
                    "Adds two numbers.",
                    object(json!({"a": {"type": "number"}, "b": {"type": "number"}}), &["a", "b"]),
                ),
                Tool::new("fs/read", "Reads.", object(json!({}), &[])),
                Tool::new("fs_read", "Reads too.", object(json!({}), &[])),
                Tool::new("<b>\x1b[31mred", "Paints \x1b[2Jthe screen.", object(json!({}), &[])),
            ]));
        }
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("echo", "Echoes the message back.", object(json!({"message": {"type": "string"}}), &["message"])),
            Tool::new(
                "add",
                "Adds two numbers.",
                object(json!({"a": {"type": "number"}, "b": {"type": "number"}}), &["a", "b"]),
            ),
            Tool::new("count", "How many times count was called on this server.", object(json!({}), &[])),
            Tool::new("fail", "Always fails.", object(json!({}), &[])),
            Tool::new("crash", "Exits in the middle of the call.", object(json!({}), &[])),
            Tool::new("sleep", "Sleeps.", object(json!({"secs": {"type": "number"}}), &["secs"])),
            Tool::new("env", "This server's environment.", object(json!({}), &[])),
            Tool::new("chart", "A chart with words around it.", object(json!({}), &[])),
            Tool::new("big", "A long text.", object(json!({"bytes": {"type": "number"}}), &["bytes"])),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        Ok(match request.name.as_ref() {
            "echo" => text(format!("Echo: {}", args["message"].as_str().unwrap_or_default())),
            "add" => text((args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0)).to_string()),
            "count" => text((self.counted.fetch_add(1, Ordering::SeqCst) + 1).to_string()),
            "fail" => CallToolResult::error(vec![ContentBlock::text("the order service is down")]).into(),
            "crash" => {
                eprintln!("test server: crashing on purpose");
                std::process::exit(1);
            }
            "env" => text(std::env::vars().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n")),
            "chart" => CallToolResult::success(vec![
                ContentBlock::text("Sales by month:"),
                ContentBlock::image("QUJD".repeat(2048), "image/png"),
                ContentBlock::text("(up 4%)"),
            ])
            .into(),
            "big" => text("x".repeat(args["bytes"].as_f64().unwrap_or(0.0) as usize)),
            "math.add" => text((args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0)).to_string()),
            "sleep" => {
                tokio::time::sleep(Duration::from_secs_f64(args["secs"].as_f64().unwrap_or(1.0))).await;
                text("slept")
            }
            other => {
                return Err(ErrorData::invalid_params(format!("no tool `{other}`"), None));
            }
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).map(|i| args.get(i + 1).cloned().unwrap_or_default());
    if let Some(path) = flag("--pid-file") {
        use std::io::Write;
        let mut pids = vec![std::process::id()];
        if args.iter().any(|a| a == "--with-child") {
            let child = std::process::Command::new("sleep")
                .arg("600")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()?;
            pids.push(child.id());
        }
        if args.iter().any(|a| a == "--escaping-child") {
            // setsid(1) puts the sleep in a session (and group) of its own.
            let child = std::process::Command::new("setsid")
                .args(["sleep", "600"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()?;
            pids.push(child.id());
        }
        let lines: String = pids.iter().map(|pid| format!("{pid}\n")).collect();
        std::fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(lines.as_bytes())?;
    }
    eprintln!("test server: started");
    if args.iter().any(|a| a == "--exit-at-start") {
        eprintln!("test server: cannot open the orders database");
        std::process::exit(3);
    }
    if let Some(secs) = flag("--slow-start") {
        tokio::time::sleep(Duration::from_secs_f64(secs.parse()?)).await;
    }
    let server = TestServer {
        counted: AtomicU64::new(0),
        odd_names: args.iter().any(|a| a == "--odd-names"),
        only_echo: args.iter().any(|a| a == "--only-echo"),
    }
    .serve(rmcp::transport::stdio())
    .await?;
    server.waiting().await?;
    Ok(())
}

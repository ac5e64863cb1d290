//! The run log as the tests read it: typed, so an assertion names a field, not a chain of
//! indices. Lenient on purpose (unknown fields are ignored): each test asserts what it checks.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct Log {
    pub status: String,
    pub error: Option<String>,
    pub messages: Vec<Value>,
    pub turns: Vec<Turn>,
    pub usage: Usage,
    pub cost: RunCost,
}

#[derive(Debug, Deserialize)]
pub struct Turn {
    pub index: u64,
    pub reply: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub requests: Vec<Request>,
    pub tool_calls: Vec<ToolCall>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Deserialize)]
pub struct Request {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub attempts: Vec<Value>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub pinned: bool,
}

#[derive(Debug, Deserialize, PartialEq)]
pub struct Check {
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

#[derive(Debug, Deserialize)]
pub struct RunCost {
    pub unpriced: bool,
}

impl Check {
    pub fn new(check: &str, passed: bool, detail: &str) -> Self {
        Self { check: check.to_owned(), passed, detail: detail.to_owned() }
    }
}

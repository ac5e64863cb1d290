pub mod provider;
pub mod pricing;
pub mod scenario;
pub mod tools;
pub mod usage;
pub mod agent;
pub mod check;
pub mod record;

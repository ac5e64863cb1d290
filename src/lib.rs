pub mod provider;
pub mod pricing;
pub mod scenario;
pub mod tools;
pub mod usage;

//! Cluster verbs that read or label what is already installed.

pub mod namespace;
pub mod metrics;
pub mod proxy;
pub mod policy;
pub mod verify;
pub mod support;

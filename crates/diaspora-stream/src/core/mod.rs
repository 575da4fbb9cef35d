//! The deterministic cores: every decision of a QoS stream, with an
//! injected clock (µs from any fixed origin). No I/O, no time source.

pub mod consumer;
pub mod flow;
pub mod producer;

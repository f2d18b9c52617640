//! Support for the end-to-end simulation tests.
#![allow(dead_code)]

pub mod broker;
pub mod gateway;
pub mod netns;
pub mod sim;
pub mod subscriber;

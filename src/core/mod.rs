//! Leaf types every layer shares and that import nothing else of the crate:
//! the result record, the captured frame, clock helpers, journald
//! `MESSAGE_ID`s and crash-safe file replacement.

pub mod clock;
pub mod frame;
pub mod fsutil;
pub mod gpio;
pub mod ids;
pub mod result;

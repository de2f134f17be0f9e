//! Leaf types every layer shares and that import nothing else of the crate:
//! the result record, the captured frame, clock helpers, GPIO line types,
//! journald `MESSAGE_ID`s, crash-safe file replacement and the shutdown
//! token.

pub mod clock;
pub mod frame;
pub mod fsutil;
pub mod gpio;
pub mod ids;
pub mod result;
pub mod shutdown;

//! Sightings: from a result per frame to what happened.
//!
//! This module owns the logic that turns inferred frames into sightings (one
//! continuous presence of a label on a source, per zone when zones are
//! configured: [`tracker`]) and the motion measurement that lets the
//! pipeline skip frames of a static scene ([`motion`]). Both are pure: the
//! pipeline feeds them, the store keeps what they return, the API and MQTT
//! serve it. Zone geometry is a leaf type ([`crate::core::zone`]) so the
//! configuration can validate polygons.

pub mod motion;
pub mod tracker;

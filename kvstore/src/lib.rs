//! kvstore
mod artifact;
mod error;
mod key;
mod name;
mod route;

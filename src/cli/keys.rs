//! `spotter keys`: create, list and revoke API keys in the state directory
//! ([`crate::keys::KeyStore`]).

use std::io::Write;

use clap::Subcommand;

use crate::config;
use crate::keys::{KeyStore, Scope};

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key; the secret is printed once and never stored.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "read", value_parser = ["read", "admin"])]
        scope: String,
    },
    /// List keys (metadata only).
    List,
    /// Revoke by id or name; the daemon applies it on the next request.
    Revoke { id_or_name: String },
}

pub(super) fn keys(settings: &config::Settings, action: KeysAction) -> anyhow::Result<()> {
    let ks = KeyStore::new(&settings.daemon.state_dir);
    let mut out = std::io::stdout().lock();
    match action {
        KeysAction::Create { name, scope } => {
            let (info, secret) = ks.create(&name, scope.parse::<Scope>()?)?;
            let _ = writeln!(out, "{}", secret.expose());
            eprintln!(
                "created key {} ({}, {}); the secret above is shown only once",
                info.id, info.name, info.scope
            );
        }
        KeysAction::List => {
            for k in ks.list()? {
                let _ = writeln!(
                    out,
                    "{}  {:<5}  {:<24} created {}{}",
                    k.id,
                    k.scope,
                    k.name,
                    k.created_unix_s,
                    if k.revoked { "  REVOKED" } else { "" }
                );
            }
        }
        KeysAction::Revoke { id_or_name } => {
            let k = ks.revoke(&id_or_name)?;
            let _ = writeln!(out, "revoked {} ({})", k.id, k.name);
        }
    }
    Ok(())
}

//! `spotter keys`: create, list and revoke API keys in the state directory
//! ([`crate::keys::KeyStore`]).

use std::io::Write;

use clap::Subcommand;

use crate::config;
use crate::keys::{KeyStore, Scope};
use crate::store::{audit_spool, AuditAction, AuditRecord};

/// Log `rec` and leave it for the daemon's audit trail (issue 23); a state
/// directory that cannot take it is reported, the action stands.
pub(super) fn spool(settings: &config::Settings, rec: &AuditRecord) {
    // The command line logs warnings only; the audit line is info.
    let level = log::max_level();
    log::set_max_level(level.max(log::LevelFilter::Info));
    let spooled = audit_spool(&settings.daemon.state_dir, rec);
    log::set_max_level(level);
    if let Err(e) = spooled {
        eprintln!(
            "warning: audit record not kept in {}: {e}",
            settings.daemon.state_dir.display()
        );
    }
}

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
            let created = scope
                .parse::<Scope>()
                .and_then(|scope| ks.create(&name, scope));
            let rec = AuditRecord::new(AuditAction::KeyCreated, "cli");
            let rec = match &created {
                Ok((info, _)) => rec.target(&info.id),
                Err(e) => rec.refused(e.to_string()),
            };
            spool(settings, &rec);
            let (info, secret) = created?;
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
            let revoked = ks.revoke(&id_or_name);
            // The key's id, never what was typed (a name, or a mistyped secret).
            let rec = AuditRecord::new(AuditAction::KeyRevoked, "cli");
            let rec = match &revoked {
                Ok(k) => rec.target(&k.id),
                Err(e) => rec.refused(e.to_string()),
            };
            spool(settings, &rec);
            let k = revoked?;
            let _ = writeln!(out, "revoked {} ({})", k.id, k.name);
        }
    }
    Ok(())
}

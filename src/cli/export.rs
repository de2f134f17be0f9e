//! `spotter export`: write the result store (results, sightings and their
//! snapshots) as NDJSON to stdout, from the store itself or, while the
//! daemon holds its lock, through the daemon's `GET /api/v1/backup`.
//!
//! Encryption (issue 23): with `--recipient age1…` (repeatable) or
//! `--recipients-file FILE` the backup is an age file encrypted to those
//! X25519 public keys; without them `[backup] recipients` apply, and with
//! `backup.require_encryption = true` a plain export is refused. Through
//! the daemon, the command's recipients are sent as `recipient=` parameters
//! and the daemon encrypts (the plaintext never crosses the socket).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::Context;

use super::{fail, load_settings, Failure, EXIT_CONFIG, EXIT_FAILURE};
use crate::{config, logging};

pub(super) fn export(
    path: &Path,
    since: Option<&str>,
    key_file: Option<&Path>,
    recipient_args: &[String],
    recipients_file: Option<&Path>,
) -> Result<(), Failure> {
    let _ = logging::init(log::LevelFilter::Warn);
    let settings = load_settings(path)?;
    let since_ns = since
        .map(|s| -> anyhow::Result<u64> {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--since {s:?} is not an RFC 3339 time"))?;
            u64::try_from(t.unix_timestamp_nanos()).context("--since is before 1970")
        })
        .transpose()
        .map_err(fail(EXIT_CONFIG))?;
    let asked = collect_recipients(recipient_args, recipients_file).map_err(fail(EXIT_CONFIG))?;
    let recipients = if asked.is_empty() {
        settings.backup.age_recipients()
    } else {
        asked.clone()
    };
    if recipients.is_empty() && settings.backup.require_encryption {
        return Err(anyhow::anyhow!(
            "backup.require_encryption = true in {}: pass --recipient age1… (or \
             --recipients-file), or set backup.recipients",
            path.display()
        ))
        .map_err(fail(EXIT_CONFIG));
    }
    if !recipients.is_empty() && std::io::stdout().is_terminal() {
        return Err(anyhow::anyhow!(
            "refusing to write an encrypted (binary) backup to a terminal: redirect stdout to a \
             file"
        ))
        .map_err(fail(EXIT_CONFIG));
    }
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let store =
        match crate::store::Store::open_with(&settings.store.dir, settings.store.flush_every_ms) {
            Ok(store) => store,
            Err(crate::store::StoreError::Locked { path }) => {
                eprintln!(
                    "{} is held by the running daemon; exporting through its API",
                    path.display()
                );
                let done = export_from_daemon(&settings, key_file, since_ns, &asked, out)
                    .map_err(fail(EXIT_FAILURE))?;
                match done {
                    Exported::Records(n) => {
                        eprintln!("exported {n} records (results and sightings)")
                    }
                    Exported::Encrypted(bytes) => {
                        eprintln!("exported an encrypted backup of {bytes} bytes")
                    }
                }
                return Ok(());
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context("opening the result store"))
                    .map_err(fail(EXIT_FAILURE))
            }
        };
    let bar = indicatif::ProgressBar::new(store.len() as u64);
    let progress = |k| bar.set_position(k);
    let n = if recipients.is_empty() {
        crate::store::backup::export(&store, since_ns, out, progress)
    } else {
        crate::store::backup::export_encrypted(&store, since_ns, out, &recipients, progress)
    }
    .map_err(|e| anyhow::Error::new(e).context("export"))
    .map_err(fail(EXIT_FAILURE))?;
    bar.finish_and_clear();
    if recipients.is_empty() {
        eprintln!("exported {n} records (results and sightings)");
    } else {
        eprintln!(
            "exported {n} records (results and sightings), encrypted to {} recipient(s)",
            recipients.len()
        );
    }
    Ok(())
}

/// The recipients given on the command line and in `--recipients-file`
/// (one public key per line; blank lines and `#` comments skipped).
fn collect_recipients(
    args: &[String],
    file: Option<&Path>,
) -> anyhow::Result<Vec<age::x25519::Recipient>> {
    let mut out = Vec::new();
    for a in args {
        out.push(config::parse_recipient(a).map_err(|m| anyhow::anyhow!("--recipient: {m}"))?);
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the recipients file {}", path.display()))?;
        let before = out.len();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(
                config::parse_recipient(line)
                    .map_err(|m| anyhow::anyhow!("{}:{}: {m}", path.display(), i + 1))?,
            );
        }
        if out.len() == before {
            anyhow::bail!("the recipients file {} holds no public key", path.display());
        }
    }
    Ok(out)
}

/// What came from the daemon.
enum Exported {
    /// Plain NDJSON: this many records and sightings.
    Records(u64),
    /// An age file of this many bytes.
    Encrypted(u64),
}

/// Stream the running daemon's `GET /api/v1/backup` to `out`, with
/// progress: plain NDJSON line by line, an encrypted backup as it comes.
fn export_from_daemon(
    settings: &config::Settings,
    key_file: Option<&Path>,
    since_ns: Option<u64>,
    recipients: &[age::x25519::Recipient],
    mut out: impl Write,
) -> anyhow::Result<Exported> {
    let api = crate::tools::localapi::LocalApi::new(settings, key_file)
        .context("export through the daemon's API")?;
    let path = backup_path(since_ns, recipients);
    let mut body = std::io::BufReader::with_capacity(
        64 * 1024,
        api.get(&path).context("export through the daemon's API")?,
    );
    let incomplete = "the daemon's export stopped; the output is incomplete";
    let bar = indicatif::ProgressBar::new_spinner();
    let start = body.fill_buf().context(incomplete)?;
    if crate::store::backup::is_age(start) {
        let n = std::io::copy(&mut bar.wrap_read(body), &mut out).context(incomplete)?;
        out.flush().context("writing the export")?;
        bar.finish_and_clear();
        return Ok(Exported::Encrypted(n));
    }
    let (mut line, mut records) = (Vec::new(), 0u64);
    loop {
        line.clear();
        if body.read_until(b'\n', &mut line).context(incomplete)? == 0 {
            break;
        }
        if records == 0 && line.starts_with(b"{\"spotter_export\"") {
            // The header: its count_hint sizes the bar.
            if let Some(n) = serde_json::from_slice::<serde_json::Value>(&line)
                .ok()
                .and_then(|h| h["count_hint"].as_u64())
            {
                bar.set_length(n);
                bar.set_style(indicatif::ProgressStyle::default_bar());
            }
        } else if !line.starts_with(b"{\"snapshot\"")
            && !line.starts_with(b"{\"sighting_snapshot\"")
        {
            records += 1;
            bar.set_position(records);
        }
        out.write_all(&line).context("writing the export")?;
    }
    out.flush().context("writing the export")?;
    bar.finish_and_clear();
    Ok(Exported::Records(records))
}

/// `/api/v1/backup` with `since` and one `recipient` per key.
fn backup_path(since_ns: Option<u64>, recipients: &[age::x25519::Recipient]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(ns) = since_ns {
        q.append_pair("since", &ns.to_string());
    }
    for r in recipients {
        q.append_pair("recipient", &r.to_string());
    }
    let q = q.finish();
    if q.is_empty() {
        "/api/v1/backup".into()
    } else {
        format!("/api/v1/backup?{q}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch a recipients file whose comments or blank lines are read
    // as keys, a bad key reported without its file and line, a private key
    // accepted as a recipient, or the command's recipients not reaching
    // the daemon's request.
    #[test]
    fn recipients_come_from_arguments_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            age::x25519::Identity::generate().to_public(),
            age::x25519::Identity::generate().to_public(),
        );
        let file = dir.path().join("recipients.txt");
        std::fs::write(&file, format!("# backups\n\n  {b}  \n")).unwrap();
        let got = collect_recipients(&[a.to_string()], Some(&file)).unwrap();
        assert_eq!(got, vec![a.clone(), b.clone()]);
        std::fs::write(&file, format!("{b}\nage1nope\n")).unwrap();
        let e = collect_recipients(&[], Some(&file))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{}:2", file.display())), "{e}");
        std::fs::write(&file, "# nothing\n").unwrap();
        assert!(collect_recipients(&[], Some(&file)).is_err());
        let secret = age::x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        let e = collect_recipients(&[secret.to_string().expose_secret().to_string()], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("PRIVATE"), "{e}");
        assert!(!e.contains("AGE-SECRET-KEY-1"), "the secret is echoed: {e}");
        let p = backup_path(Some(5), &[a.clone(), b.clone()]);
        assert_eq!(
            p,
            format!("/api/v1/backup?since=5&recipient={a}&recipient={b}")
        );
        assert_eq!(backup_path(None, &[]), "/api/v1/backup");
    }
}

//! The raw, per-file view of configuration: every key optional and spanned,
//! unknown keys refused, so each error can point at a file, line and column.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{
    CaptureFormat, ConfigError, Fit, JpegScaling, MqttProtocol, RuntimeSetting, SourceKind,
};

type Field<T> = Option<Spanned<T>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub daemon: Option<RawDaemon>,
    /// `[source]` (one table, merged key by key across files) or
    /// `[[source]]` (several cameras; see [`RawSources`]).
    pub source: Option<RawSources>,
    pub model: Option<RawModel>,
    pub store: Option<RawStore>,
    pub api: Option<RawApi>,
    pub mqtt: Option<RawMqtt>,
    pub gpio: Option<super::gpio::RawGpio>,
    // --- Sightings (issue 18) ---
    pub sightings: Option<super::sightings::RawSightings>,
    pub zone: Option<Vec<super::sightings::RawZone>>,
    pub motion: Option<super::sightings::RawMotion>,
    // --- Privacy masks (issue 23) ---
    pub privacy_mask: Option<Vec<super::privacy::RawPrivacyMask>>,
    pub privacy: Option<super::privacy::RawPrivacy>,
    // --- Power and heat (issue 22) ---
    pub power: Option<super::power::RawPower>,
    // --- Model rollout over the broker (issue 22) ---
    pub rollout: Option<super::rollout::RawRollout>,
    // --- Audit trail (issue 23) ---
    pub audit: Option<super::audit::RawAudit>,
    // --- Encrypted backups (issue 23) ---
    pub backup: Option<super::backup::RawBackup>,
    // --- Signed model bundles (issue 22) ---
    pub signing: Option<super::signing::RawSigning>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub state_dir: Field<PathBuf>,
    pub log_level: Field<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    // Several sources per daemon (issue 19): the source's name.
    pub name: Field<String>,
    pub kind: Field<SourceKind>,
    pub device: Field<PathBuf>,
    pub width: Field<u32>,
    pub height: Field<u32>,
    pub fps: Field<f64>,
    pub format: Field<CaptureFormat>,
    pub buffers: Field<u32>,
    pub dir: Field<PathBuf>,
    pub r#loop: Field<bool>,
    pub retry_initial_ms: Field<u64>,
    pub retry_max_ms: Field<u64>,
    pub stall_timeout_ms: Field<u64>,
    // --- kind = "http_mjpeg" (issue 19) ---
    pub url: Field<String>,
    pub credentials_file: Field<PathBuf>,
    pub ca_file: Field<PathBuf>,
    // kind = "command"
    pub command: Field<Vec<String>>,
    pub max_frame_bytes: Field<u64>,
}

/// The `source` key: the single `[source]` table, or the `[[source]]`
/// array of tables (several cameras). Deserialised by hand so that each
/// table is read by toml's own deserializer (spans and unknown-key errors
/// keep working inside both forms).
#[derive(Debug)]
pub(super) enum RawSources {
    One(Box<RawSource>),
    Many(Vec<RawSource>),
}

/// What `[[source]]` looks like to the code that reads `[source]` keys: an
/// empty table (the entries are read one by one, see `config::sources`).
static NO_SOURCE: std::sync::LazyLock<RawSource> = std::sync::LazyLock::new(RawSource::default);

impl std::ops::Deref for RawSources {
    type Target = RawSource;
    fn deref(&self) -> &RawSource {
        match self {
            RawSources::One(r) => r,
            RawSources::Many(_) => &NO_SOURCE,
        }
    }
}

impl<'de> Deserialize<'de> for RawSources {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawSources;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a [source] table or [[source]] tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<RawSources, A::Error> {
                RawSource::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(|r| RawSources::One(Box::new(r)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, s: A) -> Result<RawSources, A::Error> {
                Vec::<RawSource>::deserialize(serde::de::value::SeqAccessDeserializer::new(s))
                    .map(RawSources::Many)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    pub path: Field<PathBuf>,
    pub labels: Field<PathBuf>,
    pub runtime: Field<RuntimeSetting>,
    pub litert_lib: Field<PathBuf>,
    pub threads: Field<usize>,
    pub top_k: Field<usize>,
    pub min_score: Field<f32>,
    pub fit: Field<Fit>,
    /// Letterbox padding; an integer so that 256 is refused naming the key.
    pub pad_value: Field<i64>,
    pub label_filter: Field<Vec<String>>,
    pub label_deny: Field<Vec<String>>,
    pub min_box_area: Field<f32>,
    pub max_detections: Field<usize>,
    pub iou_threshold: Field<f32>,
    /// `[model.min_score_by_label]`: label = score. Merged key by key across
    /// files (see [`Layers::all`]).
    pub min_score_by_label: Option<BTreeMap<String, Spanned<f32>>>,
    pub max_pixels: Field<u64>,
    pub jpeg_scaling: Field<JpegScaling>,
    pub input_mean: Field<f32>,
    pub input_std: Field<f32>,
    pub retry_ms: Field<u64>,
    /// Classifier region of interest (issue 18): `[x, y, width, height]`.
    pub roi: Field<Vec<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub dir: Field<PathBuf>,
    pub flush_every_ms: Field<u64>,
    /// sled's page cache bound (issue 21, peak RSS).
    pub cache_bytes: Field<u64>,
    pub max_age_s: Field<u64>,
    pub max_records: Field<usize>,
    pub max_bytes: Field<u64>,
    pub min_free_bytes: Field<u64>,
    pub snapshots: Field<bool>,
    pub snapshot_labels: Field<Vec<String>>,
    pub snapshot_min_score: Field<f32>,
    pub snapshot_max_per_minute: Field<u32>,
    pub snapshot_max_count: Field<usize>,
    pub snapshot_max_bytes: Field<u64>,
    // --- Storage policy (issue 18) ---
    pub keep_frames: Field<super::sightings::KeepFrames>,
    pub frame_sample_s: Field<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub listen: Field<String>,
    pub cert: Field<PathBuf>,
    pub key: Field<PathBuf>,
    pub max_connections: Field<usize>,
    pub header_read_timeout_ms: Field<u64>,
    pub keep_alive_idle_ms: Field<u64>,
    pub max_results_limit: Field<usize>,
    pub auth_fail_rate_per_s: Field<f64>,
    pub auth_fail_burst: Field<u32>,
    pub key_rate_per_s: Field<f64>,
    pub key_burst: Field<u32>,
    pub max_body_bytes: Field<u64>,
    pub cors_allowed_origins: Field<Vec<String>>,
    pub max_concurrent_uploads: Field<usize>,
    pub upload_queue: Field<usize>,
    pub max_upload_pixels: Field<u64>,
    pub max_model_bytes: Field<u64>,
    pub max_event_subscribers: Field<usize>,
    pub event_heartbeat_ms: Field<u64>,
    pub client_ca: Field<PathBuf>,
    pub client_auth: Field<super::ClientAuth>,
    // Request bodies (issue 21).
    pub body_timeout_ms: Field<u64>,
    pub body_min_bytes_per_s: Field<u64>,
    pub body_budget_bytes: Field<u64>,
    // Connection limits (issue 21).
    pub max_connections_per_address: Field<usize>,
    pub max_handshakes_per_address: Field<usize>,
    pub tls_handshake_timeout_ms: Field<u64>,
    // Browser sessions (issue 20).
    pub session_idle_s: Field<u64>,
    pub session_max_s: Field<u64>,
    // The latest-frame route (issue 20).
    pub max_frame_viewers: Field<usize>,
    pub frame_max_fps: Field<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMqtt {
    pub enabled: Field<bool>,
    pub host: Field<String>,
    pub port: Field<u16>,
    pub protocol: Field<MqttProtocol>,
    pub tls: Field<bool>,
    pub ca_file: Field<PathBuf>,
    pub client_cert: Field<PathBuf>,
    pub client_key: Field<PathBuf>,
    pub username: Field<String>,
    pub password_file: Field<PathBuf>,
    pub device_id: Field<String>,
    pub client_id: Field<String>,
    pub result_topic: Field<String>,
    pub status_topic: Field<String>,
    pub event_topic: Field<String>,
    // Sightings (issue 18): started/ended, store-and-forward like results.
    pub sighting_topic: Field<String>,
    pub keep_alive_s: Field<u64>,
    pub reconnect_initial_ms: Field<u64>,
    pub reconnect_max_ms: Field<u64>,
    pub max_inflight: Field<u16>,
    pub drain_rate_per_s: Field<f64>,
    pub outbox_max_records: Field<usize>,
    pub outbox_max_bytes: Field<u64>,
    pub homeassistant: Field<bool>,
    pub homeassistant_prefix: Field<String>,
    pub homeassistant_labels: Field<Vec<String>>,
}

/// A value together with where it was set.
#[derive(Debug, Clone)]
pub(super) struct Origin<T> {
    pub value: T,
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl<T> Origin<T> {
    /// The position alone, for errors about this key.
    pub(super) fn as_pos(&self) -> Origin<()> {
        Origin {
            value: (),
            path: self.path.clone(),
            line: self.line,
            column: self.column,
        }
    }
}

/// Places keys of one file's tables (see [`Layers::get_tables`]).
pub(super) struct Placer<'a> {
    path: &'a std::path::Path,
    text: &'a str,
}

impl Placer<'_> {
    pub(super) fn at<T: Clone>(&self, f: &Option<Spanned<T>>) -> Option<Origin<T>> {
        f.as_ref().map(|s| self.place(s))
    }

    /// Where one spanned value was set.
    pub(super) fn place<T: Clone>(&self, s: &Spanned<T>) -> Origin<T> {
        let (line, column) = line_col(self.text, s.span().start);
        Origin {
            value: s.get_ref().clone(),
            path: self.path.to_path_buf(),
            line,
            column,
        }
    }

    pub(super) fn path(&self) -> String {
        self.path.display().to_string()
    }
}

struct Layer {
    path: PathBuf,
    text: String,
    raw: RawConfig,
}

/// The parsed files, in layering order (later wins).
pub(super) struct Layers {
    layers: Vec<Layer>,
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, column)
}

impl Layers {
    pub(super) fn parse(sources: Vec<(PathBuf, String)>) -> Result<Layers, ConfigError> {
        let mut layers = Vec::with_capacity(sources.len());
        for (path, text) in sources {
            let raw: RawConfig = toml::from_str(&text).map_err(|e| {
                let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((0, 0));
                ConfigError::Parse {
                    path: path.display().to_string(),
                    line,
                    column,
                    message: e.message().trim().to_string(),
                }
            })?;
            layers.push(Layer { path, text, raw });
        }
        Ok(Layers { layers })
    }

    /// The value of one key from the last file that sets it.
    pub(super) fn get<T: Clone>(
        &self,
        pick: impl Fn(&RawConfig) -> Option<&Spanned<T>>,
    ) -> Option<Origin<T>> {
        self.layers.iter().rev().find_map(|l| {
            pick(&l.raw).map(|s| {
                let (line, column) = line_col(&l.text, s.span().start);
                Origin {
                    value: s.get_ref().clone(),
                    path: l.path.clone(),
                    line,
                    column,
                }
            })
        })
    }

    /// An array of tables (`[[gpio.rule]]`) from the last file that has it
    /// (arrays replace, they do not merge), with a way to place its keys.
    pub(super) fn get_tables<T>(
        &self,
        pick: impl Fn(&RawConfig) -> Option<&Vec<T>>,
    ) -> Option<(&[T], Placer<'_>)> {
        self.layers.iter().rev().find_map(|l| {
            pick(&l.raw).map(|v| {
                (
                    v.as_slice(),
                    Placer {
                        path: &l.path,
                        text: &l.text,
                    },
                )
            })
        })
    }

    /// Every file's value of one table, in layering order (main file
    /// first), each with a way to place its keys: for tables that merge key
    /// by key, later files winning.
    pub(super) fn all<T>(&self, pick: impl Fn(&RawConfig) -> Option<&T>) -> Vec<(&T, Placer<'_>)> {
        self.layers
            .iter()
            .filter_map(|l| {
                pick(&l.raw).map(|v| {
                    (
                        v,
                        Placer {
                            path: &l.path,
                            text: &l.text,
                        },
                    )
                })
            })
            .collect()
    }

    /// One `[[source]]` entry of the layer that has the array, as if it were
    /// the only file and its `[source]` table: the `[source]` checks then
    /// read it unchanged and still place its keys in that file.
    pub(super) fn source_entry(&self, layer: usize, entry: &RawSource) -> Layers {
        let l = &self.layers[layer];
        Layers {
            layers: vec![Layer {
                path: l.path.clone(),
                text: l.text.clone(),
                raw: RawConfig {
                    source: Some(RawSources::One(Box::new(entry.clone()))),
                    ..RawConfig::default()
                },
            }],
        }
    }

    /// Which files have `[source]` and which `[[source]]`, by layer index:
    /// (tables, arrays).
    pub(super) fn source_forms(&self) -> (Vec<usize>, Vec<usize>) {
        let (mut one, mut many) = (Vec::new(), Vec::new());
        for (i, l) in self.layers.iter().enumerate() {
            match &l.raw.source {
                Some(RawSources::One(_)) => one.push(i),
                Some(RawSources::Many(_)) => many.push(i),
                None => {}
            }
        }
        (one, many)
    }

    /// The `[[source]]` entries of layer `i` (empty when it has none).
    pub(super) fn source_entries(&self, i: usize) -> &[RawSource] {
        match &self.layers[i].raw.source {
            Some(RawSources::Many(v)) => v,
            _ => &[],
        }
    }

    /// The file of layer `i`, for errors.
    pub(super) fn layer_path(&self, i: usize) -> String {
        self.layers[i].path.display().to_string()
    }

    pub(super) fn paths(&self) -> Vec<PathBuf> {
        self.layers.iter().map(|l| l.path.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::line_col;

    // Would catch off-by-one line/column reporting in every config error.
    #[test]
    fn line_col_is_one_based() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 9), (2, 4));
    }
}

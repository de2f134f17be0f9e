use std::path::PathBuf;

use super::*;

fn one(text: &str) -> Result<Settings, ConfigError> {
    from_sources(vec![(
        PathBuf::from("/etc/spotter/spotter.toml"),
        text.to_string(),
    )])
}

// Would catch a default drifting from what the example config documents.
#[test]
fn empty_file_gives_documented_defaults() {
    let s = one("").unwrap();
    assert_eq!(s.source.kind, SourceKind::V4l2);
    assert_eq!(s.source.device, PathBuf::from("/dev/video0"));
    assert_eq!((s.source.width, s.source.height), (640, 480));
    assert_eq!(s.model.runtime, RuntimeSetting::Auto);
    assert_eq!(s.model.top_k, 5);
    assert_eq!(s.store.dir, PathBuf::from("/var/lib/spotter/results"));
    assert_eq!(s.store.flush_every_ms, 1000);
    assert_eq!(s.store.cache_bytes, 4 << 20);
    assert_eq!(
        (s.store.max_age_s, s.store.max_records, s.store.max_bytes),
        (2_592_000, 1_000_000, 1 << 30)
    );
    assert_eq!(s.api.listen.to_string(), "127.0.0.1:8443");
}

// Would catch unknown keys being ignored (a typo silently keeping a default).
#[test]
fn unknown_key_names_file_line_and_key() {
    let err = one("[source]\nkind = \"files\"\ndir = \"/x\"\nfsp = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("/etc/spotter/spotter.toml:4:"), "{err}");
    assert!(err.contains("fsp"), "{err}");
}

// Would catch `store.cache_bytes` (issue 21) being ignored, or a cache too
// small to hold a page (or larger than a board's memory) being accepted
// without naming the key: the value reaches the settings, and both
// out-of-range ends are refused with the key and line.
#[test]
fn store_cache_bytes_is_read_and_bounded() {
    let s = one("[store]\ncache_bytes = 8388608\n").unwrap();
    assert_eq!(s.store.cache_bytes, 8 << 20);
    for bad in ["1000", "2147483648"] {
        let err = one(&format!("[store]\ncache_bytes = {bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2:") && err.contains("`store.cache_bytes`"),
            "{err}"
        );
    }
}

// Would catch unknown sections being ignored.
#[test]
fn unknown_section_is_an_error() {
    let err = one("[camera]\nx = 1\n").unwrap_err().to_string();
    assert!(err.contains(":1:") && err.contains("camera"), "{err}");
}

// Would catch a wrongly typed value being coerced or reported without position.
#[test]
fn wrong_type_names_line() {
    let err = one("[model]\nthreads = \"two\"\n").unwrap_err().to_string();
    assert!(err.starts_with("/etc/spotter/spotter.toml:2:"), "{err}");
}

// Would catch out-of-range values being accepted, or reported without the key.
#[test]
fn out_of_range_value_names_key_and_line() {
    let err = one("[source]\nkind = \"files\"\ndir = \"/x\"\nfps = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains(":4:") && err.contains("`source.fps`"), "{err}");
    let err = one("\n[api]\nlisten = \"nonsense\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains(":3:") && err.contains("`api.listen`"), "{err}");
}

// Would catch a files source starting without a folder to replay.
#[test]
fn files_source_requires_dir() {
    let err = one("[source]\nkind = \"files\"\n").unwrap_err().to_string();
    assert!(err.contains("source.dir"), "{err}");
}

// Would catch drop-ins being applied in the wrong order or replacing whole sections.
#[test]
fn dropins_layer_key_by_key_in_order() {
    let s = from_sources(vec![
        (
            PathBuf::from("main.toml"),
            "[source]\nkind = \"files\"\ndir = \"/a\"\nfps = 1.0\n[model]\ntop_k = 3\n".into(),
        ),
        (
            PathBuf::from("spotter.d/10-a.toml"),
            "[source]\nfps = 4.0\n".into(),
        ),
        (
            PathBuf::from("spotter.d/20-b.toml"),
            "[source]\nfps = 8.0\n[model]\nthreads = 1\n".into(),
        ),
    ])
    .unwrap();
    assert_eq!(s.source.fps, 8.0);
    assert_eq!(s.source.dir, Some(PathBuf::from("/a")));
    assert_eq!(s.model.top_k, 3);
    assert_eq!(s.model.threads, 1);
}

// Would catch a range error in a drop-in being blamed on the main file.
#[test]
fn errors_point_at_the_dropin_that_set_the_value() {
    let err = from_sources(vec![
        (PathBuf::from("main.toml"), "[model]\nthreads = 2\n".into()),
        (
            PathBuf::from("spotter.d/50-x.toml"),
            "\n\n[model]\nthreads = 0\n".into(),
        ),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("spotter.d/50-x.toml:4:"), "{err}");
}

// Would catch load() ignoring the drop-in directory or its lexical order.
#[test]
fn load_reads_dropin_dir_in_lexical_order() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("spotter.toml");
    std::fs::write(&main, "[model]\ntop_k = 2\n").unwrap();
    std::fs::create_dir(dir.path().join("spotter.d")).unwrap();
    std::fs::write(dir.path().join("spotter.d/b.toml"), "[model]\ntop_k = 9\n").unwrap();
    std::fs::write(dir.path().join("spotter.d/a.toml"), "[model]\ntop_k = 7\n").unwrap();
    std::fs::write(dir.path().join("spotter.d/ignored.conf"), "not toml").unwrap();
    let s = load(&main).unwrap();
    assert_eq!(s.model.top_k, 9);
    assert_eq!(s.files.len(), 3);
}

// Would catch the example config shipping with a key the parser refuses.
#[test]
fn shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/spotter.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let s = from_sources(vec![(PathBuf::from(path), text)]).unwrap();
    // The example documents the defaults, so it must equal an empty config
    // apart from the files list.
    let d = one("").unwrap();
    assert_eq!(s.source, d.source);
    assert_eq!(s.model, d.model);
    assert_eq!(s.api, d.api);
    assert_eq!(s.store, d.store);
    assert_eq!(s.mqtt, d.mqtt);
    assert_eq!(s.gpio, d.gpio);
    assert_eq!(s.privacy, d.privacy);
    assert_eq!(s.privacy_masks, d.privacy_masks);
    assert_eq!(s.power, d.power);
    assert_eq!(s.rollout, d.rollout);
}

// Would catch [rollout] keys ignored, a group that is not one topic level
// (`a/b` or `#` would subscribe to other devices' commands), or a size
// bound of 0 accepted; each error names its key.
#[test]
fn rollout_keys_are_read_and_checked() {
    let s = one("[rollout]\nenabled = true\ngroups = [\"north\", \"all\"]\nhealth_window_s = 5\nmax_score_drift = 0.0\n").unwrap();
    assert!(s.rollout.enabled);
    assert_eq!(s.rollout.groups, vec!["north", "all"]);
    assert_eq!(s.rollout.health_window_s, 5);
    assert_eq!(s.rollout.max_score_drift, 0.0);
    for (bad, key) in [
        ("groups = [\"a/b\"]", "rollout.groups"),
        ("groups = [\"#\"]", "rollout.groups"),
        ("max_bundle_bytes = 0", "rollout.max_bundle_bytes"),
        ("health_window_s = 0", "rollout.health_window_s"),
        ("max_score_drift = 1.5", "rollout.max_score_drift"),
    ] {
        let e = one(&format!("[rollout]\n{bad}\n")).unwrap_err().to_string();
        assert!(e.contains(key), "{bad}: {e}");
    }
}

// Would catch [power] keys ignored or accepted out of range (a zero poll
// interval would read sysfs in a busy loop).
#[test]
fn power_keys_are_read_and_checked() {
    let s = one("[power]\nsysfs_root = \"/tmp/fake\"\npoll_s = 2\nenabled = false\n").unwrap();
    assert_eq!(
        s.power,
        power::PowerSettings {
            enabled: false,
            sysfs_root: PathBuf::from("/tmp/fake"),
            poll_s: 2,
            heat: None,
        }
    );
    for bad in ["0", "3601"] {
        let e = one(&format!("[power]\npoll_s = {bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("power.poll_s"), "{e}");
    }
    assert!(one("[power]\npoll = 3\n").is_err(), "unknown key accepted");
}

// Would catch the heat limit's keys ignored, its default hysteresis lost (a
// temperature at the limit would switch the slowdown every poll), a resume
// point above the limit accepted, or hot_max_fps silently ignored without
// the limit it belongs to.
#[test]
fn heat_limit_keys_are_read_and_checked() {
    let s = one("[power]\nhot_above_c = 80.0\n").unwrap();
    assert_eq!(
        s.power.heat,
        Some(power::HeatLimit {
            above_c: 80.0,
            resume_below_c: 75.0,
            max_fps: power::DEFAULT_HOT_MAX_FPS,
        })
    );
    let s =
        one("[power]\nhot_above_c = 70.0\nhot_resume_below_c = 60.0\nhot_max_fps = 0.5\n").unwrap();
    assert_eq!(
        s.power.heat,
        Some(power::HeatLimit {
            above_c: 70.0,
            resume_below_c: 60.0,
            max_fps: 0.5,
        })
    );
    for (toml, key) in [
        (
            "hot_above_c = 80.0\nhot_resume_below_c = 85.0",
            "power.hot_resume_below_c",
        ),
        ("hot_above_c = 200.0", "power.hot_above_c"),
        ("hot_above_c = 80.0\nhot_max_fps = 0.0", "power.hot_max_fps"),
        ("hot_max_fps = 2.0", "power.hot_max_fps"),
    ] {
        let e = one(&format!("[power]\n{toml}\n")).unwrap_err().to_string();
        assert!(e.contains(key), "{toml}: {e}");
    }
}

// Would catch check-config printing something the loader cannot read back.
#[test]
fn effective_settings_round_trip_through_toml() {
    let s = one("[source]\nkind = \"files\"\ndir = \"/x\"\n").unwrap();
    let text = s.to_toml();
    let again = one(&text).unwrap();
    assert_eq!(again.source, s.source);
    assert_eq!(again.model, s.model);
    let g = one("[gpio.trigger]\nmode = \"on_trigger\"\nline = \"17\"\n[[gpio.rule]]\nlabel = \"person\"\nline = \"27\"\n").unwrap();
    assert_eq!(one(&g.to_toml()).unwrap().gpio, g.gpio);
}

// Would catch [api] access limits accepted out of range (a zero rate would lock
// Would catch the connection limits of issue 21 accepted out of range (a
// zero per-address cap refuses everyone) or not read from the file.
#[test]
fn api_connection_limits_are_validated() {
    let s = one("[api]\nmax_connections_per_address = 3\nmax_handshakes_per_address = 2\ntls_handshake_timeout_ms = 900\n").unwrap();
    assert_eq!(
        (
            s.api.max_connections_per_address,
            s.api.max_handshakes_per_address,
            s.api.tls_handshake_timeout_ms
        ),
        (3, 2, 900)
    );
    for (text, key) in [
        (
            "max_connections_per_address = 0",
            "api.max_connections_per_address",
        ),
        (
            "max_handshakes_per_address = 0",
            "api.max_handshakes_per_address",
        ),
        (
            "tls_handshake_timeout_ms = 5",
            "api.tls_handshake_timeout_ms",
        ),
    ] {
        let err = one(&format!("[api]\n{text}\n")).unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{key}`")) && err.contains(":2:"),
            "{text}: {err}"
        );
    }
}

// Would catch the session lifetimes and frame-viewer limits of issue 20 not read from the file,
// accepted out of range, or an idle time longer than the absolute one (a
// setting that silently does nothing) accepted.
#[test]
fn api_session_lifetimes_are_validated() {
    let s = one("[api]\nsession_idle_s = 120\nsession_max_s = 600\n").unwrap();
    assert_eq!((s.api.session_idle_s, s.api.session_max_s), (120, 600));
    let d = one("").unwrap();
    assert_eq!((d.api.session_idle_s, d.api.session_max_s), (1800, 43200));
    let f = one("[api]\nmax_frame_viewers = 2\nframe_max_fps = 1.5\n").unwrap();
    assert_eq!((f.api.max_frame_viewers, f.api.frame_max_fps), (2, 1.5));
    for (text, key) in [
        ("session_idle_s = 5", "api.session_idle_s"),
        ("session_max_s = 99999999", "api.session_max_s"),
        (
            "session_idle_s = 600\nsession_max_s = 300",
            "api.session_max_s",
        ),
        ("session_idle_s = 86400", "api.session_idle_s"),
        ("max_frame_viewers = 0", "api.max_frame_viewers"),
        ("frame_max_fps = 0.0", "api.frame_max_fps"),
        ("frame_max_fps = 100.0", "api.frame_max_fps"),
    ] {
        let err = one(&format!("[api]\n{text}\n")).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
    }
}

// every anonymous client out forever) or CORS origins that never match a browser.
#[test]
fn api_access_limits_are_validated() {
    let s = one("[api]\nkey_rate_per_s = 5\nauth_fail_burst = 3\ncors_allowed_origins = [\"https://ui.example\"]\n").unwrap();
    assert_eq!((s.api.key_rate_per_s, s.api.auth_fail_burst), (5.0, 3));
    assert_eq!(
        s.api.cors_allowed_origins,
        vec!["https://ui.example".to_string()]
    );
    assert_eq!(one("").unwrap().api.max_body_bytes, 10 * 1024 * 1024);
    for (text, key) in [
        ("auth_fail_rate_per_s = 0", "api.auth_fail_rate_per_s"),
        ("key_burst = 0", "api.key_burst"),
        ("max_body_bytes = 0", "api.max_body_bytes"),
        (
            "cors_allowed_origins = [\"https://ui.example/\"]",
            "api.cors_allowed_origins",
        ),
        ("cors_allowed_origins = [\"*\"]", "api.cors_allowed_origins"),
    ] {
        let err = one(&format!("[api]\n{text}\n")).unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{key}`")) && err.contains(":2:"),
            "{text}: {err}"
        );
    }
}

// Would catch an [mqtt] section accepted with settings that cannot work (a
// wildcard in a topic, a password sent without a user name, half a client
// certificate) or its defaults drifting from the documented topic layout.
#[test]
fn mqtt_section_defaults_and_validation() {
    let d = one("").unwrap().mqtt;
    assert!(!d.enabled && !d.homeassistant && d.tls);
    assert_eq!((d.port, d.protocol), (8883, MqttProtocol::V311));
    assert_eq!(d.result_topic, "spotter/{device_id}/result");
    assert_eq!(d.status_topic, "spotter/{device_id}/status");
    assert_eq!(d.event_topic, "spotter/{device_id}/event");
    // Sightings (issue 18).
    assert_eq!(d.sighting_topic, "spotter/{device_id}/sighting");
    let s =
        one("[mqtt]\nenabled = true\nprotocol = \"5\"\nusername = \"u\"\npassword_file = \"/p\"\n")
            .unwrap()
            .mqtt;
    assert_eq!(
        (s.enabled, s.protocol, s.username.as_deref()),
        (true, MqttProtocol::V5, Some("u"))
    );
    for (text, key) in [
        ("result_topic = \"a/+/b\"", "mqtt.result_topic"),
        ("event_topic = \"a/#\"", "mqtt.event_topic"),
        ("sighting_topic = \"a/+\"", "mqtt.sighting_topic"),
        ("password_file = \"/p\"", "mqtt.password_file"),
        ("client_cert = \"/c.pem\"", "mqtt.client_cert"),
        ("device_id = \"a b\"", "mqtt.device_id"),
        ("protocol = \"4\"", "`4`"),
        ("outbox_max_records = 0", "mqtt.outbox_max_records"),
        ("drain_rate_per_s = 0", "mqtt.drain_rate_per_s"),
    ] {
        let err = one(&format!("[mqtt]\n{text}\n")).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(":2:"), "{text}: {err}");
    }
}

// Would catch `[api] client_ca`/`client_auth` not reaching the settings, or an
// unknown client_auth value accepted (or refused without naming file and line).
#[test]
fn client_certificate_settings() {
    let s =
        one("[api]\nclient_ca = \"/etc/spotter/ca.pem\"\nclient_auth = \"optional\"\n").unwrap();
    assert_eq!(s.api.client_ca, Some(PathBuf::from("/etc/spotter/ca.pem")));
    assert_eq!(s.api.client_auth, crate::config::ClientAuth::Optional);
    let s = one("[api]\nclient_ca = \"/etc/spotter/ca.pem\"\n").unwrap();
    assert_eq!(s.api.client_auth, crate::config::ClientAuth::Required);
    assert!(one("[api]\nclient_ca = \"/x\"\nclient_auth = \"sometimes\"\n").is_err());
    let err = one("[api]\nclient_ca = \"/x\"\nclient_auth = \"sometimes\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/etc/spotter/spotter.toml:3:") && err.contains("sometimes"),
        "{err}"
    );
}

// Would catch a detection-rule key not reaching the settings, labels kept in
// the user's case (matching would then depend on it), or `fit`/`pad_value`
// given a value when unset (hiding the model family's own default).
#[test]
fn detection_rule_keys_fill_the_rules() {
    let s = one("[model]\nlabel_deny = [\"Cat\", \"DOG\"]\nmin_box_area = 0.02\nmax_detections = 7\niou_threshold = 0.6\npad_value = 0\nfit = \"crop\"\n[model.min_score_by_label]\nPerson = 0.6\ncat = 0.25\n").unwrap();
    let r = &s.model.rules;
    assert_eq!(r.deny, ["cat", "dog"]);
    assert!(r.allow.is_empty());
    assert_eq!(
        (r.min_box_area, r.max_detections, r.iou_threshold),
        (0.02, 7, 0.6)
    );
    assert_eq!(
        r.min_score_by_label
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>(),
        [("cat", 0.25), ("person", 0.6)]
    );
    assert_eq!((s.model.fit, s.model.pad_value), (Some(Fit::Crop), Some(0)));
    let d = one("").unwrap().model;
    assert_eq!((d.fit, d.pad_value), (None, None));
    assert_eq!(d.rules, DetectionRules::default());
    let a = one("[model]\nlabel_filter = [\"Person\"]\n").unwrap();
    assert_eq!(a.model.rules.allow, ["person"]);
}

// Would catch an out-of-range rule accepted (an IoU of 0 suppresses nothing
// or everything, a cap of 0 reports nothing, an area of 5 frames hides all
// boxes) or refused without naming the key and its line.
#[test]
fn detection_rule_ranges_name_the_key() {
    for (text, key) in [
        ("min_box_area = -0.1", "model.min_box_area"),
        ("min_box_area = 1.5", "model.min_box_area"),
        ("max_detections = 0", "model.max_detections"),
        ("max_detections = 10001", "model.max_detections"),
        ("iou_threshold = 0.0", "model.iou_threshold"),
        ("iou_threshold = 1.01", "model.iou_threshold"),
        ("iou_threshold = nan", "model.iou_threshold"),
        ("pad_value = 256", "model.pad_value"),
        ("pad_value = -1", "model.pad_value"),
        ("label_deny = [\"\"]", "model.label_deny"),
        ("label_filter = [\" \"]", "model.label_filter"),
    ] {
        let err = one(&format!("[model]\n{text}\n")).unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{key}`")) && err.contains(":2:"),
            "{text}: {err}"
        );
    }
    // The bounds themselves are accepted.
    let s = one(
        "[model]\nmin_box_area = 1.0\nmax_detections = 1\niou_threshold = 1.0\npad_value = 255\n",
    )
    .unwrap();
    assert_eq!(s.model.pad_value, Some(255));
}

// Would catch an allow-list and a deny-list both accepted (which one wins is
// a guess), or the error naming only one of the keys; an empty list is
// "unset", so the example's `label_filter = []` does not block a deny-list.
#[test]
fn allow_and_deny_lists_exclude_each_other() {
    let err = one("[model]\nlabel_filter = [\"person\"]\nlabel_deny = [\"cat\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(":3:")
            && err.contains("model.label_filter")
            && err.contains("model.label_deny"),
        "{err}"
    );
    // In a drop-in: the drop-in's key is blamed.
    let err = from_sources(vec![
        (
            PathBuf::from("main.toml"),
            "[model]\nlabel_deny = [\"cat\"]\n".into(),
        ),
        (
            PathBuf::from("spotter.d/10-x.toml"),
            "[model]\nlabel_filter = [\"person\"]\n".into(),
        ),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("spotter.d/10-x.toml:2:") && err.contains("`model.label_filter`"),
        "{err}"
    );
    let s = one("[model]\nlabel_filter = []\nlabel_deny = [\"cat\"]\n").unwrap();
    assert_eq!(s.model.rules.deny, ["cat"]);
}

// Would catch a per-label score out of range accepted, an error without the
// label's key and line, two spellings of one label both kept (which score
// applies would depend on map order), or drop-ins replacing the whole table
// instead of adding and overriding single labels.
#[test]
fn min_score_by_label_table() {
    for (text, needle) in [
        ("person = 1.5", "`model.min_score_by_label.person`"),
        ("person = -0.5", "`model.min_score_by_label.person`"),
        ("person = nan", "`model.min_score_by_label.person`"),
        ("\"\" = 0.5", "a label must not be empty"),
    ] {
        let err = one(&format!("[model]\n[model.min_score_by_label]\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(":3:") && err.contains(needle), "{text}: {err}");
    }
    let err = one("[model.min_score_by_label]\nPerson = 0.5\nperson = 0.6\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`Person`")
            && err.contains("`person`")
            && err.contains("model.min_score_by_label"),
        "{err}"
    );
    // A wrongly typed score is refused with its position.
    let err = one("[model.min_score_by_label]\nperson = \"high\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("/etc/spotter/spotter.toml:2:"), "{err}");
    let s = from_sources(vec![
        (
            PathBuf::from("main.toml"),
            "[model.min_score_by_label]\nperson = 0.6\ncat = 0.4\n".into(),
        ),
        (
            PathBuf::from("spotter.d/10-x.toml"),
            "[model.min_score_by_label]\nCAT = 0.3\ndog = 0.7\n".into(),
        ),
    ])
    .unwrap();
    assert_eq!(
        s.model
            .rules
            .min_score_by_label
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>(),
        [("cat", 0.3), ("dog", 0.7), ("person", 0.6)]
    );
}

// Would catch check-config printing a rule under a name the parser does not
// read (e.g. `allow` or a `[model.rules]` table) or a score as
// 0.6000000238418579, an unset fit printed as a value (the family default
// would be lost on reading it back), or a set one left out.
#[test]
fn check_config_prints_rules_under_their_keys() {
    let s = one("[model]\nlabel_deny = [\"cat\"]\nmin_score = 0.3\n[model.min_score_by_label]\nperson = 0.6\n").unwrap();
    let text = s.to_toml();
    for want in [
        "label_deny = [\"cat\"]",
        "label_filter = []",
        "min_score = 0.3\n",
        "iou_threshold = 0.45\n",
        "max_detections = 100\n",
        "[model.min_score_by_label]\nperson = 0.6\n",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    assert!(
        !text.contains("fit =") && !text.contains("pad_value ="),
        "{text}"
    );
    assert!(
        text.contains("[model]\n# fit, pad_value unset: the model family's default\n"),
        "{text}"
    );
    assert_eq!(one(&text).unwrap().model, s.model);
    let set = one("[model]\nmin_score = 0.5\nfit = \"letterbox\"\npad_value = 114\n").unwrap();
    let text = set.to_toml();
    assert!(
        text.contains("fit = \"letterbox\"\npad_value = 114\n") && !text.contains("unset"),
        "{text}"
    );
    assert_eq!(one(&text).unwrap().model, set.model);
}

// --- kind = "http_mjpeg" (issue 19) ---

// Would catch the http_mjpeg keys not reaching the settings, a missing url
// accepted (the source could never open), credentials in the URL accepted
// (they would show in logs and status), or errors not naming the key.
#[test]
fn http_mjpeg_source_keys_and_validation() {
    let s = one("[source]\nkind = \"http_mjpeg\"\nurl = \"https://cam.local:8443/video.mjpg\"\ncredentials_file = \"/etc/spotter/cam.credentials\"\nca_file = \"/etc/spotter/cam-ca.pem\"\nmax_frame_bytes = 2000000\n")
        .unwrap()
        .source;
    assert_eq!(s.kind, SourceKind::HttpMjpeg);
    assert_eq!(s.url.as_deref(), Some("https://cam.local:8443/video.mjpg"));
    assert_eq!(
        s.credentials_file,
        Some(PathBuf::from("/etc/spotter/cam.credentials"))
    );
    assert_eq!(s.ca_file, Some(PathBuf::from("/etc/spotter/cam-ca.pem")));
    assert_eq!(s.max_frame_bytes, 2_000_000);
    let d = one("[source]\nkind = \"http_mjpeg\"\nurl = \"http://[fe80::1]/\"\n")
        .unwrap()
        .source;
    assert_eq!(d.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);

    let err = one("[source]\nkind = \"http_mjpeg\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source.url") && err.contains("http_mjpeg"),
        "{err}"
    );
    for (text, key) in [
        ("url = \"rtsp://cam/stream\"", "source.url"),
        ("url = \"http://user:pw@cam/stream\"", "source.url"),
        ("url = \"http:///stream\"", "source.url"),
        ("url = \"http://cam:99999/\"", "source.url"),
        (
            "url = \"http://cam/\"\nca_file = \"/ca.pem\"",
            "source.ca_file",
        ),
        (
            "url = \"http://cam/\"\nmax_frame_bytes = 10",
            "source.max_frame_bytes",
        ),
    ] {
        let err = one(&format!("[source]\nkind = \"http_mjpeg\"\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{text}: {err}");
        assert!(
            !err.contains("pw@"),
            "{text}: the error repeats credentials: {err}"
        );
    }
}
// kind = "command"

// Would catch a command source accepted without a program, with an empty
// program name, with format "auto" (nothing to negotiate with a pipe), or
// with a raw format and no frame size; and the errors not naming the key.
#[test]
fn command_source_needs_a_program_a_format_and_raw_sizes() {
    let ok =
        one("[source]\nkind = \"command\"\ncommand = [\"rpicam-vid\", \"-o\", \"-\"]\n").unwrap();
    assert_eq!(ok.source.kind, SourceKind::Command);
    assert_eq!(ok.source.command, vec!["rpicam-vid", "-o", "-"]);
    assert_eq!(
        ok.source.format,
        CaptureFormat::Mjpeg,
        "mjpeg is the default"
    );
    assert_eq!(ok.source.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);

    let err = |text: &str| one(text).unwrap_err().to_string();
    let e = err("[source]\nkind = \"command\"\n");
    assert!(
        e.contains("`source.command`") && e.contains("required"),
        "{e}"
    );
    let e = err("[source]\nkind = \"command\"\ncommand = []\n");
    assert!(e.contains(":3:") && e.contains("`source.command`"), "{e}");
    let e = err("[source]\nkind = \"command\"\ncommand = [\" \", \"x\"]\n");
    assert!(
        e.contains("`source.command`") && e.contains("program"),
        "{e}"
    );
    let e = err("[source]\nkind = \"command\"\ncommand = [\"x\"]\nformat = \"auto\"\n");
    assert!(e.contains(":4:") && e.contains("`source.format`"), "{e}");
    for f in ["yuv420", "nv12", "yuyv"] {
        let base = format!("[source]\nkind = \"command\"\ncommand = [\"x\"]\nformat = \"{f}\"\n");
        let e = err(&base);
        assert!(e.contains("`source.width`") && e.contains(f), "{e}");
        let e = err(&format!("{base}width = 640\n"));
        assert!(e.contains("`source.height`"), "{e}");
        let s = one(&format!("{base}width = 640\nheight = 480\n")).unwrap();
        assert_eq!((s.source.width, s.source.height), (640, 480));
    }
    let e = err("[source]\nkind = \"command\"\ncommand = [\"x\"]\nmax_frame_bytes = 10\n");
    assert!(e.contains("`source.max_frame_bytes`"), "{e}");
}

// Would catch v4l2 accepting a format it cannot capture (it would fail at
// negotiation with a less clear message, or silently use another).
#[test]
fn v4l2_refuses_the_yuv420_formats_naming_the_key() {
    for f in ["yuv420", "nv12"] {
        let e = one(&format!("[source]\nformat = \"{f}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":2:") && e.contains("`source.format`") && e.contains("command"),
            "{e}"
        );
    }
}

// Would catch a README "Cameras" block for a command source that no longer
// loads (a renamed key, a raw format without its size): users paste them.
#[test]
fn readme_command_source_blocks_load() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let cameras = readme
        .split("\n## Cameras\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Cameras section");
    let blocks: Vec<&str> = cameras
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.contains("kind = \"command\""))
        .collect();
    assert!(blocks.len() >= 3, "{blocks:?}");
    for b in blocks {
        let s = one(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
        assert_eq!(s.source.kind, SourceKind::Command, "{b}");
        assert!(!s.source.command.is_empty(), "{b}");
    }
}

// --- Several sources per daemon (issue 19) ---

// Would catch `[[source]]` entries being lost, merged into one, or read
// without their own checks and names.
#[test]
fn several_sources_are_read_in_order_with_their_names() {
    let s = one(
        "[[source]]\nname = \"yard\"\nkind = \"files\"\ndir = \"/a\"\n\n[[source]]\nname = \"gate-2\"\ndevice = \"/dev/video2\"\nfps = 30.0\n",
    )
    .unwrap();
    let names: Vec<&str> = s.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["yard", "gate-2"]);
    assert_eq!(s.source, s.sources[0]);
    assert_eq!(s.sources[0].kind, SourceKind::Files);
    assert_eq!(s.sources[1].device, PathBuf::from("/dev/video2"));
    assert_eq!(s.sources[1].fps, 30.0);
}

// Would catch the single `[source]` table breaking or going unnamed.
#[test]
fn single_source_table_keeps_working_with_the_default_name() {
    let s = one("[source]\nkind = \"files\"\ndir = \"/x\"\n").unwrap();
    assert_eq!(s.sources.len(), 1);
    assert_eq!(s.source.name, DEFAULT_SOURCE_NAME);
    let s = one("[source]\nname = \"porch\"\n").unwrap();
    assert_eq!(s.sources[0].name, "porch");
}

// Would catch bad, missing or duplicate names being accepted, or errors that
// do not say which entry is wrong.
#[test]
fn source_names_are_validated_naming_the_entry() {
    let err = one("[[source]]\nkind = \"files\"\ndir = \"/a\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("source[0].name"), "{err}");
    let err = one("[[source]]\nname = \"a b\"\n").unwrap_err().to_string();
    assert!(
        err.contains("source[0].name") && err.contains(":2:"),
        "{err}"
    );
    let err = one("[[source]]\nname = \"\"\n").unwrap_err().to_string();
    assert!(err.contains("source[0].name"), "{err}");
    let err = one("[[source]]\nname = \"cam\"\n[[source]]\nname = \"cam\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source[1] \"cam\".name") && err.contains("unique"),
        "{err}"
    );
    let err = one("[[source]]\nname = \"upload\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("upload"), "{err}");
    // A key of one entry: the error names the entry and the line.
    let err = one("[[source]]\nname = \"a\"\n[[source]]\nname = \"b\"\nfps = 0\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source[1] \"b\".fps") && err.contains(":5:"),
        "{err}"
    );
    let err = one("[[source]]\nname = \"a\"\nkind = \"files\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("source[0] \"a\".dir"), "{err}");
}

// Would catch `[source]` and `[[source]]` silently overriding each other
// across the main file and a drop-in.
#[test]
fn source_table_and_array_at_once_are_refused() {
    let err = from_sources(vec![
        (PathBuf::from("/etc/s.toml"), "[source]\nfps = 2.0\n".into()),
        (
            PathBuf::from("/etc/s.d/cams.toml"),
            "[[source]]\nname = \"a\"\n".into(),
        ),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/etc/s.d/cams.toml") && err.contains("/etc/s.toml"),
        "{err}"
    );
    assert!(
        err.contains("[[source]]") && err.contains("[source]"),
        "{err}"
    );
}

// Would catch the stall timeout staying a fixed 5 s (a 15 fps camera lost
// for seconds before anyone notices), a default without a floor, or the
// explicit override being ignored.
#[test]
fn stall_timeout_follows_the_frame_rate_unless_set() {
    let s = one("[source]\nfps = 15.0\n").unwrap();
    assert!(
        s.source.stall_timeout_ms < 750,
        "{}",
        s.source.stall_timeout_ms
    );
    assert!(s.source.stall_timeout_ms >= 2 * 1000 / 15);
    let s = one("[source]\nfps = 240.0\n").unwrap();
    assert_eq!(s.source.stall_timeout_ms, sources::STALL_FLOOR_MS);
    let s = one("[source]\nkind = \"files\"\ndir = \"/x\"\nfps = 0.5\n").unwrap();
    assert!(s.source.stall_timeout_ms >= 2_000);
    let s = one("[source]\nfps = 15.0\nstall_timeout_ms = 5000\n").unwrap();
    assert_eq!(s.source.stall_timeout_ms, 5_000);
    // Reopening is capped so that a camera that comes back streams within 2 s.
    let s = one("").unwrap();
    assert!(s.source.retry_max_ms <= 1_000);
    let s = one("[source]\nretry_initial_ms = 3000\n").unwrap();
    assert_eq!(s.source.retry_max_ms, 3_000);
}

// Would catch check-config printing several sources in a form the loader
// cannot read back (or folding them into one `[source]`).
#[test]
fn several_sources_round_trip_through_toml() {
    let s = one(
        "[[source]]\nname = \"a\"\nkind = \"files\"\ndir = \"/a\"\n[[source]]\nname = \"b\"\nfps = 5.0\n",
    )
    .unwrap();
    let again = one(&s.to_toml()).unwrap();
    assert_eq!(again.sources, s.sources);
    assert_eq!(again.source, s.source);
}

// --- Sightings, zones, motion, storage policy (issue 18) ---

// Would catch the issue's defaults drifting: 2 of 3 frames, 3 s, 90 days,
// keep_frames = sightings with a 60 s sample, motion gating decided by the
// model kind, 10 s idle.
#[test]
fn sightings_defaults_are_the_documented_ones() {
    let s = one("").unwrap();
    let r = &s.sightings.default_rule;
    assert_eq!((r.min_frames, r.window, r.end_after_ms), (2, 3, 3000));
    assert!(s.sightings.enabled && s.sightings.labels.is_empty() && s.zones.is_empty());
    assert_eq!(s.sightings.max_age_s, 90 * 86_400);
    assert_eq!(s.store.keep_frames, KeepFrames::Sightings);
    assert_eq!(s.store.frame_sample_s, 60);
    assert_eq!(s.motion.enabled, None);
    assert!(s.motion.enabled_for(true) && !s.motion.enabled_for(false));
    assert_eq!(s.motion.max_idle_s, 10);
    assert_eq!(s.model.roi, None);
}

// Would catch a bad zone loading (and silently never matching), or its
// error not naming the file, line and key a technician must fix.
#[test]
fn bad_zones_are_refused_naming_file_line_and_key() {
    let cases = [
        (
            "[source]\nkind = \"files\"\ndir = \"/x\"\n\n[[zone]]\nname = \"porch\"\npolygon = [[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]\n",
            ":7:",
            "zone[0].polygon",
            "intersect",
        ),
        (
            "[[zone]]\nname = \"porch\"\npolygon = [[0.0, 0.0], [1.5, 0.0], [1.0, 1.0]]\n",
            ":3:",
            "zone[0].polygon",
            "",
        ),
        (
            "[[zone]]\nname = \"porch\"\nsource = \"garage\"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]\n",
            ":3:",
            "zone[0].source",
            "garage",
        ),
        (
            "[[zone]]\nname = \"a b\"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]\n",
            ":2:",
            "zone[0].name",
            "",
        ),
        (
            "[[zone]]\nname = \"p\"\npolygon = [[0.0, 0.0], [1.0]]\n",
            ":3:",
            "zone[0].polygon",
            "[x, y]",
        ),
    ];
    for (text, at, key, why) in cases {
        let e = one(text).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("/etc/spotter/spotter.toml{at}")),
            "{e}"
        );
        assert!(e.contains(key) && e.contains(why), "{e}");
    }
    let e = one(
        "[[source]]\nname = \"a\"\nkind = \"files\"\ndir = \"/x\"\n[[source]]\nname = \"b\"\nkind = \"files\"\ndir = \"/y\"\n\
         [[zone]]\nname = \"p\"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("zone[0].source") && e.contains("several sources"),
        "{e}"
    );
}

// Would catch sighting rules that can never open (min_frames above the
// window), a rule without its label, a duplicate label, or a bad ROI
// loading.
#[test]
fn bad_sighting_rules_and_roi_are_refused_naming_the_key() {
    for (text, key) in [
        ("[sightings]\nmin_frames = 4\n", "sightings.min_frames"),
        ("[sightings]\nwindow = 1\n", "sightings.window"),
        ("[sightings]\nend_after_ms = 5\n", "sightings.end_after_ms"),
        ("[sightings]\nmin_score = 1.5\n", "sightings.min_score"),
        (
            "[[sightings.rule]]\nmin_frames = 1\n",
            "sightings.rule[0].label",
        ),
        (
            "[[sightings.rule]]\nlabel = \"cat\"\n[[sightings.rule]]\nlabel = \"cat\"\n",
            "sightings.rule[1].label",
        ),
        (
            "[[sightings.rule]]\nlabel = \"cat\"\nwindow = 9\nmin_frames = 10\n",
            "sightings.rule[0].min_frames",
        ),
        (
            "[store]\nkeep_frames = \"some\"\n",
            ":2:15: unknown variant `some`",
        ),
        ("[store]\nframe_sample_s = 0\n", "store.frame_sample_s"),
        ("[motion]\nmin_area = 1.5\n", "motion.min_area"),
        ("[motion]\nmax_idle_s = 0\n", "motion.max_idle_s"),
        ("[model]\nroi = [0.5, 0.5, 0.6, 0.2]\n", "model.roi"),
        ("[model]\nroi = [0.1, 0.1, 0.2]\n", "model.roi"),
    ] {
        let e = one(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
    let s = one("[[sightings.rule]]\nlabel = \"person\"\nwindow = 5\nmin_frames = 3\n").unwrap();
    let r = s.sightings.rule("person");
    assert_eq!((r.min_frames, r.window, r.end_after_ms), (3, 5, 3000));
    assert_eq!(s.sightings.rule("cat").window, 3);
    let s = one("[model]\nroi = [0.25, 0.5, 0.5, 0.5]\n").unwrap();
    assert_eq!(s.model.roi.unwrap().pixels(640, 480), (160, 240, 320, 240));
}

// Would catch check-config printing zones, rules or the storage policy in
// a form the loader cannot read back.
#[test]
fn sightings_settings_round_trip_through_toml() {
    let s = one(
        "[source]\nkind = \"files\"\ndir = \"/x\"\n[store]\nkeep_frames = \"sampled\"\nframe_sample_s = 5\n\
         [sightings]\nlabels = [\"person\", \"car\"]\nmin_score = 0.4\n\
         [[sightings.rule]]\nlabel = \"person\"\nwindow = 5\nmin_frames = 3\nend_after_ms = 5000\n\
         [[zone]]\nname = \"porch\"\nanchor = \"center\"\nlabels = [\"person\"]\npolygon = [[0.1, 0.5], [0.7, 0.5], [0.75, 1.0], [0.05, 1.0]]\n\
         [motion]\nenabled = true\nmax_idle_s = 30\n[model]\nroi = [0.1, 0.2, 0.3, 0.4]\n",
    )
    .unwrap();
    let again = one(&s.to_toml()).unwrap();
    assert_eq!(again.sightings, s.sightings);
    assert_eq!(again.zones, s.zones);
    assert_eq!(again.motion, s.motion);
    assert_eq!(again.store, s.store);
    assert_eq!(again.model.roi, s.model.roi);
}

// Issue 18, motion. Would catch `model.roi` printed by check-config as a
// table of x/y/width/height, which the loader (an array) cannot read back.
#[test]
fn roi_round_trips_through_toml() {
    let s = one("[model]\nroi = [0.25, 0.0, 0.5, 1.0]\n").unwrap();
    let roi = s.model.roi.expect("roi");
    assert_eq!((roi.x, roi.y, roi.width, roi.height), (0.25, 0.0, 0.5, 1.0));
    let text = s.to_toml();
    let printed: toml::Value = toml::from_str(&text).unwrap();
    let printed = &printed["model"]["roi"];
    assert!(printed.is_array(), "{printed}");
    let again = one(&format!("[model]\nroi = {printed}\n")).unwrap();
    assert_eq!(again.model.roi, s.model.roi);
}

// --- Encrypted backups (issue 23) ---

// Would catch a bad age key accepted at load (found only when a backup is
// asked for), an error that does not name the entry, a private key taken
// as a recipient (or echoed into the error and so the log), or
// `require_encryption` not read.
#[test]
fn backup_recipients_are_validated_at_load() {
    let s = one("").unwrap();
    assert_eq!(s.backup, BackupSettings::default());
    let a = age::x25519::Identity::generate().to_public().to_string();
    let s = one(&format!(
        "[backup]\nrecipients = [\"{a}\", \" {a} \"]\nrequire_encryption = true\n"
    ))
    .unwrap();
    assert_eq!(s.backup.recipients, vec![a.clone(), a.clone()]);
    assert!(s.backup.require_encryption);
    assert_eq!(s.backup.age_recipients().len(), 2);
    let e = one(&format!("[backup]\nrecipients = [\"{a}\", \"age1xyz\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`backup.recipients[1]`"), "{e}");
    assert!(e.starts_with("/etc/spotter/spotter.toml:2:"), "{e}");
    use age::secrecy::ExposeSecret;
    let secret = age::x25519::Identity::generate()
        .to_string()
        .expose_secret()
        .to_string();
    let e = one(&format!("[backup]\nrecipients = [\"{secret}\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("PRIVATE") && !e.contains(&secret), "{e}");
}

// --- Privacy masks (issue 23) ---

// Would catch a privacy mask validated differently from a zone (a
// self-intersecting or out-of-frame polygon, or an unknown source, loading
// and then masking nothing or the wrong pixels), a bad colour read as
// black, or errors that do not name the file, line and key.
#[test]
fn bad_privacy_masks_are_refused_naming_file_line_and_key() {
    let cases = [
        (
            "[[privacy_mask]]\npolygon = [[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]\n",
            ":2:",
            "privacy_mask[0].polygon",
            "intersect",
        ),
        (
            "[[privacy_mask]]\npolygon = [[0.0, 0.0], [1.5, 0.0], [1.0, 1.0]]\n",
            ":2:",
            "privacy_mask[0].polygon",
            "outside the frame",
        ),
        (
            "[[privacy_mask]]\nsource = \"garage\"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]\n",
            ":2:",
            "privacy_mask[0].source",
            "garage",
        ),
        (
            "[[privacy_mask]]\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]\nfill = \"grey\"\n",
            ":3:",
            "privacy_mask[0].fill",
            "#rrggbb",
        ),
        (
            "[privacy]\nlabel_fill = \"#12345\"\n",
            ":2:",
            "privacy.label_fill",
            "#rrggbb",
        ),
        (
            "[privacy]\nblur_labels = [\"\"]\n",
            ":2:",
            "privacy.blur_labels",
            "",
        ),
    ];
    for (text, at, key, why) in cases {
        let e = one(text).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("/etc/spotter/spotter.toml{at}")),
            "{e}"
        );
        assert!(e.contains(key) && e.contains(why), "{e}");
    }
    let e = one("[[privacy_mask]]\nfill = \"#000000\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("privacy_mask[0].polygon"), "{e}");
}

// Would catch the documented defaults drifting (no masks, nothing blurred,
// inference sees the masked frame), a mask's source or fill not taken, or
// check-config printing the privacy settings in a form the loader cannot
// read back.
#[test]
fn privacy_settings_default_and_round_trip_through_toml() {
    let s = one("").unwrap();
    assert!(s.privacy_masks.is_empty() && s.privacy.blur_labels.is_empty());
    assert!(s.privacy.mask_inference && s.privacy.label_fill.is_none());
    let s = one(
        "[source]\nkind = \"files\"\ndir = \"/x\"\n\
         [[privacy_mask]]\npolygon = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5]]\nfill = \"#FF8000\"\n\
         [[privacy_mask]]\nsource = \"default\"\npolygon = [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0]]\n\
         [privacy]\nblur_labels = [\"person\"]\nlabel_fill = \"#101010\"\nmask_inference = false\n",
    )
    .unwrap();
    assert_eq!(s.privacy_masks.len(), 2);
    assert_eq!(s.privacy_masks[0].source, s.sources[0].name);
    assert_eq!(s.privacy_masks[0].fill, [255, 128, 0]);
    assert_eq!(s.privacy_masks[1].fill, [0, 0, 0]);
    assert_eq!(s.privacy.label_fill, Some([16, 16, 16]));
    assert!(!s.privacy.mask_inference);
    let again = one(&s.to_toml()).unwrap();
    assert_eq!(again.privacy_masks, s.privacy_masks);
    assert_eq!(again.privacy, s.privacy);
}

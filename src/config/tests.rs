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

//! Home Assistant MQTT discovery: the retained config messages that make a
//! Spotter appear in Home Assistant as one device with a "last label" and a
//! "last score" sensor fed from the result topic, and one binary sensor per
//! configured label fed from that label's sighting state (issue 18: ON from
//! a sighting's start to its end, see `ha_state`, instead of per frame), all
//! available while the status topic says `online`.

use serde_json::json;

use super::Resolved;

/// A topic segment Home Assistant accepts as a node or object id.
pub(super) fn slug(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        "_".into()
    } else {
        out
    }
}

/// The Jinja expression for the labels of a result: every detection's, and
/// the top class's (the "last label" sensor).
const LABELS_EXPR: &str = "((value_json.detections | map(attribute='label') | list) + \
                           (value_json.classes[:1] | map(attribute='label') | list))";

/// (topic, retained payload) for every discovery message.
pub(super) fn messages(r: &Resolved, version: &str) -> Vec<(String, Vec<u8>)> {
    let s = &r.settings;
    let node = slug(&r.device_id);
    let device = json!({
        "identifiers": [format!("spotter_{node}")],
        "name": format!("Spotter {}", r.device_id),
        "manufacturer": "Spotter",
        "model": "Spotter inference appliance",
        "sw_version": version,
    });
    let base = |object: &str, name: &str| {
        json!({
            "name": name,
            "unique_id": format!("spotter_{node}_{object}"),
            "object_id": format!("spotter_{node}_{object}"),
            "state_topic": r.result_topic,
            "availability_topic": r.status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
        })
    };
    let mut out = Vec::new();
    let mut label = base("last_label", "Last label");
    label["value_template"] = json!(format!(
        "{{% set l = {LABELS_EXPR} %}}{{{{ l[0] if l else 'none' }}}}"
    ));
    label["json_attributes_topic"] = json!(r.result_topic);
    label["json_attributes_template"] =
        json!("{{ {'id': value_json.id, 'model_sha256': value_json.model_sha256, 'ts_ns': value_json.ts_ns} | tojson }}");
    out.push((
        format!("{}/sensor/{node}/last_label/config", s.homeassistant_prefix),
        label,
    ));
    let mut score = base("last_score", "Last score");
    score["value_template"] = json!(
        "{% if value_json.detections %}{{ value_json.detections[0].score | round(3) }}\
         {% elif value_json.classes %}{{ value_json.classes[0].score | round(3) }}{% else %}0{% endif %}"
    );
    score["state_class"] = json!("measurement");
    out.push((
        format!("{}/sensor/{node}/last_score/config", s.homeassistant_prefix),
        score,
    ));
    for l in &s.homeassistant_labels {
        let object = format!("label_{}", slug(l));
        let mut b = base(&object, l);
        // Sightings (issue 18): the label's retained ON/OFF state.
        b["state_topic"] = json!(super::ha_state::state_topic(&r.sighting_topic, l));
        b["payload_on"] = json!("ON");
        b["payload_off"] = json!("OFF");
        out.push((
            format!(
                "{}/binary_sensor/{node}/{object}/config",
                s.homeassistant_prefix
            ),
            b,
        ));
    }
    out.into_iter()
        .map(|(t, v)| (t, v.to_string().into_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch discovery topics Home Assistant ignores (wrong component or
    // characters outside its id alphabet), sensors not wired to the result
    // and status topics, or binary sensors still reading the result topic
    // (flipping per frame) instead of their label's sighting state.
    #[test]
    fn discovery_messages_name_topics_and_templates() {
        let mut settings = crate::config::from_sources(vec![]).unwrap().mqtt;
        settings.homeassistant = true;
        settings.homeassistant_labels = vec!["person".into(), "jack-o'-lantern".into()];
        let r = Resolved::new(settings, Some("cam.1".into()));
        let msgs = messages(&r, "0.1.0");
        let topics: Vec<&str> = msgs.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/sensor/cam_1/last_label/config",
                "homeassistant/sensor/cam_1/last_score/config",
                "homeassistant/binary_sensor/cam_1/label_person/config",
                "homeassistant/binary_sensor/cam_1/label_jack-o_-lantern/config",
            ]
        );
        let v: serde_json::Value = serde_json::from_slice(&msgs[3].1).unwrap();
        assert_eq!(
            v["state_topic"],
            "spotter/cam.1/sighting/jack-o_-lantern/state"
        );
        assert_eq!(
            (&v["payload_on"], &v["payload_off"]),
            (&"ON".into(), &"OFF".into())
        );
        assert!(v.get("value_template").is_none(), "{v}");
        assert_eq!(v["availability_topic"], "spotter/cam.1/status");
        assert_eq!(v["device"]["identifiers"][0], "spotter_cam_1");
        let v: serde_json::Value = serde_json::from_slice(&msgs[0].1).unwrap();
        assert_eq!(v["state_topic"], "spotter/cam.1/result");
    }
}

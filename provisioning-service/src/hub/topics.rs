//! What a broker's client may publish and subscribe to. Brokers ask per topic with only the
//! username (RabbitMQ, go-auth) or the username and client id (EMQX, VerneMQ), after the
//! connect was authenticated; so the identity is read from the username alone.
//!
//! - A device (`{hub}/{deviceId}/…`) publishes device-to-cloud messages under
//!   `devices/{deviceId}/messages/events/` and subscribes to its cloud-to-device messages under
//!   `devices/{deviceId}/messages/devicebound/`.
//! - A back-end application (`{hub}/{policy}`, no second slash) subscribes to any device's
//!   events (`devices/+/messages/events/#`) and publishes cloud-to-device messages to one device.
//!
//! IoT Hub's `$iothub/…` topics (twins, direct methods) carry no device id: on a shared broker,
//! allowing them would let every device read every other device's method calls and twin
//! answers. They are refused until this service emulates twins and methods per device.

/// A publish or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Publish,
    Subscribe,
}

/// Who the broker says the client is, from the username of an authenticated connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity<'a> {
    Device(&'a str),
    Backend(&'a str),
}

impl<'a> Identity<'a> {
    /// `{hub}/{deviceId}/…` is a device; `{hub}/{policy}` a back-end application.
    #[must_use]
    pub fn of_username(username: &'a str) -> Option<Self> {
        let (hub, rest) = username.split_once('/')?;
        if hub.is_empty() || rest.is_empty() {
            return None;
        }
        Some(match rest.split_once('/') {
            Some((device_id, _)) if !device_id.is_empty() => Self::Device(device_id),
            Some(_) => return None,
            None => Self::Backend(rest),
        })
    }
}

/// Whether `identity` may `access` `topic` (an MQTT topic name or, for subscriptions, filter).
#[must_use]
pub fn allowed(identity: &Identity<'_>, access: Access, topic: &str) -> bool {
    let segments: Vec<&str> = topic.split('/').collect();
    match (identity, access, segments.as_slice()) {
        // devices/{me}/messages/events/… (no wildcards: a publish topic has none).
        (
            Identity::Device(me),
            Access::Publish,
            ["devices", id, "messages", "events", rest @ ..],
        ) => id == me && no_wildcards(rest),
        // devices/{me}/messages/devicebound/… (any filter below it).
        (
            Identity::Device(me),
            Access::Subscribe,
            ["devices", id, "messages", "devicebound", _, ..],
        ) => id == me,
        // devices/{one device or +}/messages/events/…
        (Identity::Backend(_), Access::Subscribe, ["devices", id, "messages", "events", _, ..]) => {
            *id == "+" || no_wildcards(&[id])
        }
        // devices/{one device}/messages/devicebound/…
        (
            Identity::Backend(_),
            Access::Publish,
            ["devices", id, "messages", "devicebound", rest @ ..],
        ) => no_wildcards(&[id]) && no_wildcards(rest),
        _ => false,
    }
}

fn no_wildcards(segments: &[&str]) -> bool {
    segments.iter().all(|s| !s.contains(['+', '#']))
}

/// A RabbitMQ routing key as the MQTT topic `who` published or subscribed to. RabbitMQ's MQTT
/// plugin writes `/` as `.` and `+` as `*` and leaves a `.` as it is (rabbitmq-server
/// `deps/rabbitmq_mqtt/src/rabbit_mqtt_util.erl`, `to_amqp`; the same in 3.10, where it is
/// `mqtt2amqp`), so a device id with dots spans several words of the key. The id is put back
/// whole: the asking device's own id where it stands, else the words between `devices.` and
/// `.messages.`; every other `.` is a level separator.
#[must_use]
pub fn topic_of_routing_key(who: &Identity<'_>, routing_key: &str) -> String {
    let levels = |key: &str| key.replace('*', "+").replace('.', "/");
    let Some(rest) = routing_key.strip_prefix("devices.") else {
        return levels(routing_key);
    };
    if let Identity::Device(me) = who {
        if let Some(tail) = rest.strip_prefix(me).and_then(|t| t.strip_prefix('.')) {
            return format!("devices/{me}/{}", levels(tail));
        }
    }
    match rest.find(".messages.") {
        Some(at) => {
            let id = match &rest[..at] {
                "*" => "+",
                id => id,
            };
            format!("devices/{id}/{}", levels(&rest[at + 1..]))
        }
        None => levels(routing_key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Identity<'static> = Identity::Device("dev-1");
    const APP: Identity<'static> = Identity::Backend("service");

    #[test]
    fn identities_from_usernames() {
        assert_eq!(
            Identity::of_username("hub.example/dev-1/?api-version=2021-04-12"),
            Some(ME)
        );
        assert_eq!(Identity::of_username("hub.example/service"), Some(APP));
        assert_eq!(Identity::of_username("hub.example"), None);
        assert_eq!(Identity::of_username("hub.example//x"), None);
    }

    #[test]
    fn a_device_reaches_only_its_own_topics() {
        use Access::{Publish, Subscribe};
        for (access, topic, ok) in [
            (Publish, "devices/dev-1/messages/events/", true),
            (Publish, "devices/dev-1/messages/events/a%3Db", true),
            (Publish, "devices/dev-2/messages/events/", false),
            (Publish, "devices/dev-1/messages/devicebound/", false),
            (
                Publish,
                "$iothub/twin/PATCH/properties/reported/?$rid=1",
                false,
            ),
            (Subscribe, "devices/dev-1/messages/devicebound/#", true),
            (Subscribe, "devices/dev-2/messages/devicebound/#", false),
            (Subscribe, "devices/+/messages/devicebound/#", false),
            (Subscribe, "devices/dev-1/messages/events/#", false),
            (Subscribe, "#", false),
            (Subscribe, "$iothub/methods/POST/#", false),
        ] {
            assert_eq!(allowed(&ME, access, topic), ok, "{access:?} {topic}");
        }
    }

    #[test]
    fn a_backend_reads_events_and_sends_to_one_device() {
        use Access::{Publish, Subscribe};
        for (access, topic, ok) in [
            (Subscribe, "devices/+/messages/events/#", true),
            (Subscribe, "devices/dev-1/messages/events/#", true),
            (Subscribe, "#", false),
            (Subscribe, "devices/#", false),
            (Publish, "devices/dev-1/messages/devicebound/", true),
            (Publish, "devices/+/messages/devicebound/", false),
            (Publish, "devices/dev-1/messages/events/", false),
        ] {
            assert_eq!(allowed(&APP, access, topic), ok, "{access:?} {topic}");
        }
    }

    #[test]
    fn routing_keys_turn_back_into_topics() {
        // As RabbitMQ writes them: `/` → `.`, `+` → `*`, a `.` kept.
        assert_eq!(
            topic_of_routing_key(&ME, "devices.dev-1.messages.events."),
            "devices/dev-1/messages/events/"
        );
        assert_eq!(
            topic_of_routing_key(&APP, "devices.*.messages.events.#"),
            "devices/+/messages/events/#"
        );
        let dotted = Identity::Device("rt.dot.x");
        assert_eq!(
            topic_of_routing_key(&dotted, "devices.rt.dot.x.messages.devicebound.#"),
            "devices/rt.dot.x/messages/devicebound/#"
        );
        assert!(allowed(
            &dotted,
            Access::Subscribe,
            &topic_of_routing_key(&dotted, "devices.rt.dot.x.messages.devicebound.#")
        ));
        assert_eq!(
            topic_of_routing_key(&APP, "devices.rt.dot.x.messages.devicebound."),
            "devices/rt.dot.x/messages/devicebound/"
        );
        // Another device whose id is a prefix of the dotted one gets no way in.
        let rt = Identity::Device("rt");
        assert!(!allowed(
            &rt,
            Access::Publish,
            &topic_of_routing_key(&rt, "devices.rt.dot.x.messages.events.")
        ));
    }
}

//! An enrollment's allocation, read from its DPS fields: which hubs it may go to
//! (`iotHubs`, `iotHubHostName`), how one is chosen (`allocationPolicy`,
//! `customAllocationDefinition`), what re-provisioning does (`reprovisionPolicy`) and the twin
//! it starts with (`initialTwin`). Validated when the enrollment is written
//! ([`Allocation::read`], [`Allocation::check`]) and applied at the SAS step ([`Allocation::plan`],
//! [`Allocation::settle`]). Shapes: Microsoft's DPS service API specification
//! (`service.json`: `AllocationPolicy`, `CustomAllocationDefinition`, `ReprovisionPolicy`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{hashed, Failure, LinkedHubs};
use crate::store::registrations::Substatus;

/// The oldest `customAllocationDefinition.apiVersion` DPS accepts ("Minimum supported version:
/// '2018-09-01-preview'", service.json).
const OLDEST_WEBHOOK_API_VERSION: &str = "2018-09-01";

/// `allocationPolicy`, as DPS names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
enum AllocationPolicy {
    Hashed,
    GeoLatency,
    Static,
    Custom,
}

/// `customAllocationDefinition`: both fields required (service.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomAllocationDefinition {
    pub webhook_url: String,
    pub api_version: String,
}

/// `reprovisionPolicy`: both fields required when the object is present; DPS's default when it
/// is absent is both true (service.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReprovisionPolicy {
    pub update_hub_assignment: bool,
    pub migrate_device_data: bool,
}

impl Default for ReprovisionPolicy {
    fn default() -> Self {
        Self {
            update_hub_assignment: true,
            migrate_device_data: true,
        }
    }
}

/// How the hub is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Evenly over the candidate hubs, by the registration id's hash (DPS's default).
    Hashed,
    /// This hub.
    Static(String),
    /// The webhook decides among the candidate hubs.
    Custom(CustomAllocationDefinition),
}

/// Why an enrollment's allocation fields are refused as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAllocation {
    #[error("{field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error("allocationPolicy geoLatency is not supported: this service does not measure latency to its hubs; use hashed, static or custom")]
    GeoLatency,
    #[error("allocationPolicy static needs iotHubHostName or exactly one hub in iotHubs")]
    StaticWithoutHub,
    #[error("iotHubHostName {0} is not in the enrollment's iotHubs")]
    StaticHubNotInList(String),
    #[error("allocationPolicy custom needs customAllocationDefinition {{webhookUrl, apiVersion}}")]
    CustomWithoutDefinition,
    #[error("customAllocationDefinition.webhookUrl: {0}")]
    WebhookUrl(&'static str),
    #[error("customAllocationDefinition.apiVersion must be a DPS api-version no older than 2018-09-01-preview")]
    ApiVersion,
    #[error("{0} is not a linked hub")]
    HubNotLinked(String),
}

/// An enrollment's allocation, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub choice: Choice,
    /// `iotHubs` when not empty: the hubs the device may go to. `None`: every linked hub.
    pub hubs: Option<Vec<String>>,
    pub reprovision: ReprovisionPolicy,
    /// The enrollment's `initialTwin`, kept with a registration whose data starts afresh.
    pub initial_twin: Option<Value>,
}

/// A field of `extra` as `T`; absent or `null` is `None`.
fn field<T: serde::de::DeserializeOwned>(
    extra: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<T>, InvalidAllocation> {
    match extra.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| InvalidAllocation::Field {
                field: name,
                message: e.to_string(),
            }),
    }
}

/// `http` or `https` with a host; `https` only unless `allow_http`.
fn check_webhook_url(url: &str, allow_http: bool) -> Result<(), InvalidAllocation> {
    let url = reqwest::Url::parse(url).map_err(|_| InvalidAllocation::WebhookUrl("not a URL"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(InvalidAllocation::WebhookUrl("no host"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http => Ok(()),
        "http" => Err(InvalidAllocation::WebhookUrl(
            "must be https (the service allows http only with --allow-http-webhooks)",
        )),
        _ => Err(InvalidAllocation::WebhookUrl("must be an https URL")),
    }
}

impl Allocation {
    /// Reads the allocation fields of an enrollment (its `extra` JSON and `iotHubHostName`),
    /// checking them on their own. Without `allocationPolicy`, a set `iotHubHostName` pins the
    /// hub (static) and otherwise the allocation is hashed, as in DPS.
    pub fn read(
        extra: &Map<String, Value>,
        iot_hub_host_name: Option<&str>,
    ) -> Result<Self, InvalidAllocation> {
        let policy: Option<AllocationPolicy> = field(extra, "allocationPolicy")?;
        let hubs: Option<Vec<String>> =
            field::<Vec<String>>(extra, "iotHubs")?.filter(|h| !h.is_empty());
        let definition: Option<CustomAllocationDefinition> =
            field(extra, "customAllocationDefinition")?;
        let reprovision = field(extra, "reprovisionPolicy")?.unwrap_or_default();
        let initial_twin: Option<Value> = field(extra, "initialTwin")?;
        if initial_twin.as_ref().is_some_and(|t| !t.is_object()) {
            return Err(InvalidAllocation::Field {
                field: "initialTwin",
                message: "must be an object".to_owned(),
            });
        }
        let listed = |hub: &str| {
            hubs.as_ref()
                .is_none_or(|list| list.iter().any(|h| h.eq_ignore_ascii_case(hub)))
        };
        let choice = match (policy, iot_hub_host_name) {
            (Some(AllocationPolicy::GeoLatency), _) => return Err(InvalidAllocation::GeoLatency),
            (None | Some(AllocationPolicy::Static), Some(hub)) => {
                if !listed(hub) {
                    return Err(InvalidAllocation::StaticHubNotInList(hub.to_owned()));
                }
                Choice::Static(hub.to_owned())
            }
            (Some(AllocationPolicy::Static), None) => match hubs.as_deref() {
                Some([only]) => Choice::Static(only.clone()),
                _ => return Err(InvalidAllocation::StaticWithoutHub),
            },
            (None | Some(AllocationPolicy::Hashed), None) | (Some(AllocationPolicy::Hashed), _) => {
                Choice::Hashed
            }
            (Some(AllocationPolicy::Custom), _) => {
                let definition = definition.ok_or(InvalidAllocation::CustomWithoutDefinition)?;
                check_webhook_url(&definition.webhook_url, true)?;
                dps_protocol::wire::api_version_date(&definition.api_version)
                    .filter(|date| *date >= OLDEST_WEBHOOK_API_VERSION)
                    .ok_or(InvalidAllocation::ApiVersion)?;
                Choice::Custom(definition)
            }
        };
        Ok(Self {
            choice,
            hubs,
            reprovision,
            initial_twin,
        })
    }

    /// Checks the allocation against this service: every hub it names is linked, and a
    /// webhook is https unless `allow_http_webhooks`.
    pub fn check(
        &self,
        linked: &LinkedHubs,
        allow_http_webhooks: bool,
    ) -> Result<(), InvalidAllocation> {
        let named = self.hubs.iter().flatten().chain(match &self.choice {
            Choice::Static(hub) => Some(hub),
            _ => None,
        });
        for hub in named {
            if !linked.contains(hub) {
                return Err(InvalidAllocation::HubNotLinked(hub.clone()));
            }
        }
        if let Choice::Custom(definition) = &self.choice {
            check_webhook_url(&definition.webhook_url, allow_http_webhooks)?;
        }
        Ok(())
    }

    /// What the SAS step does for `registration_id`, previously assigned as `previous` (if it
    /// was): a hub now, or a question to the webhook with the hubs it may choose from. A
    /// device re-provisioning under `updateHubAssignment: false` stays on its hub.
    pub fn plan<'a>(
        &'a self,
        linked: &LinkedHubs,
        registration_id: &str,
        previous: Option<&Previous>,
    ) -> Result<Plan<'a>, Failure> {
        if let Some(previous) = previous.filter(|_| !self.reprovision.update_hub_assignment) {
            return Ok(Plan::Hub(previous.hub.clone()));
        }
        // A hub unlinked since the enrollment was written is no longer a candidate.
        let offered: Vec<String> = match &self.hubs {
            Some(list) => list
                .iter()
                .filter_map(|h| linked.find(h))
                .map(str::to_owned)
                .collect(),
            None => linked.as_slice().to_vec(),
        };
        match &self.choice {
            Choice::Static(hub) => linked
                .find(hub)
                .map(|h| Plan::Hub(h.to_owned()))
                .ok_or(Failure::NoHub),
            Choice::Hashed => hashed(registration_id, &offered)
                .map(|h| Plan::Hub(h.to_owned()))
                .ok_or(Failure::NoHub),
            Choice::Custom(_) if offered.is_empty() => Err(Failure::NoHub),
            Choice::Custom(definition) => Ok(Plan::Webhook {
                definition,
                offered,
            }),
        }
    }

    /// The substatus and twin of an assignment to `hub`:
    /// - first assignment (DPS did not know the device): `initialAssignment`, the enrollment's
    ///   twin;
    /// - re-provisioning with `migrateDeviceData`: the device keeps its twin;
    ///   `deviceDataMigrated` if the hub changed, else `reprovisionedToInitialAssignment`
    ///   ("re-provisioned to a previously assigned IoT hub", device.json);
    /// - re-provisioning without it: `deviceDataReset`, the enrollment's twin again.
    ///
    /// A twin from the webhook overrides either ("it will override any twin migration
    /// settings in the enrollment", concepts-custom-allocation.md).
    #[must_use]
    pub fn settle(
        &self,
        hub: &str,
        previous: Option<&Previous>,
        webhook_twin: Option<Value>,
    ) -> (Substatus, Option<Value>) {
        let (substatus, twin) = match previous {
            None => (Substatus::InitialAssignment, self.initial_twin.clone()),
            Some(_) if !self.reprovision.migrate_device_data => {
                (Substatus::DeviceDataReset, self.initial_twin.clone())
            }
            Some(p) if p.hub.eq_ignore_ascii_case(hub) => (
                Substatus::ReprovisionedToInitialAssignment,
                p.initial_twin.clone(),
            ),
            Some(p) => (Substatus::DeviceDataMigrated, p.initial_twin.clone()),
        };
        (substatus, webhook_twin.or(twin))
    }
}

pub use crate::store::registrations::Previous;

/// What the SAS step does to assign a device.
#[derive(Debug, PartialEq)]
pub enum Plan<'a> {
    /// Assign it to this hub now.
    Hub(String),
    /// Ask the webhook, which must choose one of `offered`.
    Webhook {
        definition: &'a CustomAllocationDefinition,
        offered: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn linked() -> LinkedHubs {
        LinkedHubs::new(
            ["a.example", "b.example", "c.example"]
                .map(String::from)
                .to_vec(),
        )
        .unwrap()
    }

    #[allow(clippy::needless_pass_by_value)]
    fn read(extra: Value, pinned: Option<&str>) -> Result<Allocation, InvalidAllocation> {
        Allocation::read(extra.as_object().unwrap(), pinned)
    }

    #[test]
    fn defaults_are_dps_defaults() {
        let a = read(json!({}), None).unwrap();
        assert_eq!(a.choice, Choice::Hashed);
        assert_eq!(a.reprovision, ReprovisionPolicy::default());
        assert!(a.reprovision.update_hub_assignment && a.reprovision.migrate_device_data);
        assert_eq!(
            read(json!({}), Some("b.example")).unwrap().choice,
            Choice::Static("b.example".into())
        );
    }

    #[test]
    fn static_takes_the_pinned_hub_or_the_single_listed_one() {
        let a = read(
            json!({"allocationPolicy": "static", "iotHubs": ["c.example"]}),
            None,
        )
        .unwrap();
        assert_eq!(
            a.plan(&linked(), "x", None),
            Ok(Plan::Hub("c.example".into()))
        );
        assert_eq!(
            read(
                json!({"allocationPolicy": "static", "iotHubs": ["a.example", "b.example"]}),
                None
            ),
            Err(InvalidAllocation::StaticWithoutHub)
        );
        assert_eq!(
            read(
                json!({"allocationPolicy": "static", "iotHubs": ["a.example"]}),
                Some("b.example")
            ),
            Err(InvalidAllocation::StaticHubNotInList("b.example".into()))
        );
    }

    #[test]
    fn hashed_stays_within_iot_hubs() {
        let a = read(
            json!({"allocationPolicy": "hashed", "iotHubs": ["b.example", "C.EXAMPLE"]}),
            None,
        )
        .unwrap();
        for i in 0..50 {
            let Ok(Plan::Hub(hub)) = a.plan(&linked(), &format!("d-{i}"), None) else {
                panic!()
            };
            assert!(hub == "b.example" || hub == "c.example", "{hub}");
        }
    }

    #[test]
    fn refused_shapes_say_why() {
        assert_eq!(
            read(json!({"allocationPolicy": "geoLatency"}), None),
            Err(InvalidAllocation::GeoLatency)
        );
        assert_eq!(
            read(json!({"allocationPolicy": "custom"}), None),
            Err(InvalidAllocation::CustomWithoutDefinition)
        );
        assert!(matches!(
            read(json!({"allocationPolicy": "nearest"}), None),
            Err(InvalidAllocation::Field {
                field: "allocationPolicy",
                ..
            })
        ));
        assert!(matches!(
            read(
                json!({"reprovisionPolicy": {"updateHubAssignment": true}}),
                None
            ),
            Err(InvalidAllocation::Field {
                field: "reprovisionPolicy",
                ..
            })
        ));
        let custom = |url: &str, version: &str| {
            read(
                json!({"allocationPolicy": "custom",
            "customAllocationDefinition": {"webhookUrl": url, "apiVersion": version}}),
                None,
            )
        };
        assert_eq!(
            custom("ftp://x.example/", "2021-10-01"),
            Err(InvalidAllocation::WebhookUrl("must be an https URL"))
        );
        assert_eq!(
            custom("https://x.example/", "2018-04-01"),
            Err(InvalidAllocation::ApiVersion)
        );
        let http = custom("http://x.example/", "2019-03-31").unwrap();
        assert!(matches!(
            http.check(&linked(), false),
            Err(InvalidAllocation::WebhookUrl(_))
        ));
        assert_eq!(http.check(&linked(), true), Ok(()));
        let unlinked = read(json!({"iotHubs": ["z.example"]}), None).unwrap();
        assert_eq!(
            unlinked.check(&linked(), false),
            Err(InvalidAllocation::HubNotLinked("z.example".into()))
        );
    }

    #[test]
    fn reprovisioning_follows_the_policy() {
        let previous = Previous {
            hub: "a.example".into(),
            device_id: Some("d".into()),
            initial_twin: Some(json!({"tags": {"old": true}})),
        };
        let twin = json!({"tags": {"new": true}});
        let with = |update: bool, migrate: bool| {
            read(json!({"iotHubs": ["b.example"], "initialTwin": twin,
                "reprovisionPolicy": {"updateHubAssignment": update, "migrateDeviceData": migrate}}), None).unwrap()
        };
        let stay = with(false, true);
        assert_eq!(
            stay.plan(&linked(), "x", Some(&previous)),
            Ok(Plan::Hub("a.example".into()))
        );
        assert_eq!(
            stay.plan(&linked(), "x", None),
            Ok(Plan::Hub("b.example".into()))
        );
        assert_eq!(
            with(true, true).settle("b.example", Some(&previous), None),
            (Substatus::DeviceDataMigrated, previous.initial_twin.clone())
        );
        assert_eq!(
            with(true, false).settle("b.example", Some(&previous), None),
            (Substatus::DeviceDataReset, Some(twin.clone()))
        );
        assert_eq!(
            stay.settle("a.example", Some(&previous), None),
            (
                Substatus::ReprovisionedToInitialAssignment,
                previous.initial_twin.clone()
            )
        );
        assert_eq!(
            stay.settle("b.example", None, None),
            (Substatus::InitialAssignment, Some(twin))
        );
        let hooked = json!({"tags": {"hook": 1}});
        assert_eq!(
            stay.settle("a.example", Some(&previous), Some(hooked.clone()))
                .1,
            Some(hooked)
        );
    }
}

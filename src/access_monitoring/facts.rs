//! What a condition can see of one access request: the request's own fields, plus the
//! requester's traits and the requested resources' labels, which the caller fetches from
//! Teleport once per request.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::request::timestamp;
use crate::teleport::wire::{types, wrappers};

/// A map of string sets, as Teleport's `expression.Dict`: traits, annotations, labels.
pub type StringSets = BTreeMap<String, BTreeSet<String>>;

/// The condition variables for one access request (Teleport's `AccessRequestExpressionEnv`).
///
/// Build it with [`RequestFacts::from_wire`], then add what needs Teleport calls:
/// [`RequestFacts::with_user_traits`] and [`RequestFacts::with_resource_labels`]. Computing it
/// once per request, not per rule, is what keeps 1,000 rules cheap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// The request id, only for messages.
    pub request_id: String,
    /// `access_request.spec.user`.
    pub user: String,
    /// `access_request.spec.roles`.
    pub roles: BTreeSet<String>,
    /// `access_request.spec.suggested_reviewers`.
    pub suggested_reviewers: BTreeSet<String>,
    /// `access_request.spec.request_reason`.
    pub request_reason: String,
    /// `access_request.spec.creation_time`; unset reads as Go's zero time, as in Teleport.
    pub creation_time: Option<DateTime<Utc>>,
    /// `access_request.spec.expiry`: when the pending request expires (`ResourceExpiry`, else
    /// `metadata.expires`); unset reads as Go's zero time.
    pub expiry: Option<DateTime<Utc>>,
    /// `access_request.spec.system_annotations`.
    pub system_annotations: StringSets,
    /// `user.traits`: the requester's traits (empty when they could not be read).
    pub user_traits: StringSets,
    /// `access_request.spec.resource_labels_union`: every label value of any requested resource.
    pub resource_labels_union: StringSets,
    /// `access_request.spec.resource_labels_intersection`: the labels every requested resource
    /// has with the same value.
    pub resource_labels_intersection: StringSets,
}

fn label_values(values: Option<&wrappers::LabelValues>) -> StringSets {
    values
        .map(|v| {
            v.values
                .iter()
                .map(|(key, values)| (key.clone(), values.values.iter().cloned().collect()))
                .collect()
        })
        .unwrap_or_default()
}

impl RequestFacts {
    /// The request's own fields, read from the wire as Teleport's plugin reads them
    /// (`GetCreationTime()`, `Expiry()`, `GetSystemAnnotations()`, …).
    pub fn from_wire(request: &types::AccessRequestV3) -> Self {
        let metadata = request.metadata.clone().unwrap_or_default();
        let spec = request.spec.clone().unwrap_or_default();
        RequestFacts {
            request_id: metadata.name,
            user: spec.user,
            roles: spec.roles.into_iter().collect(),
            suggested_reviewers: spec.suggested_reviewers.into_iter().collect(),
            request_reason: spec.request_reason,
            creation_time: timestamp(spec.created.as_ref()),
            expiry: timestamp(spec.resource_expiry.as_ref())
                .or_else(|| timestamp(metadata.expires.as_ref())),
            system_annotations: label_values(spec.system_annotations.as_ref()),
            ..Default::default()
        }
    }

    /// Sets `user.traits` (from `GetUserOrLoginState`).
    pub fn with_user_traits<K, V, I>(mut self, traits: impl IntoIterator<Item = (K, I)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
        I: IntoIterator<Item = V>,
    {
        self.user_traits = traits
            .into_iter()
            .map(|(k, values)| (k.into(), values.into_iter().map(Into::into).collect()))
            .collect();
        self
    }

    /// Sets the labels union and intersection from the requested resources' labels (one map
    /// per resource, static and dynamic labels together, from `ListResources`).
    pub fn with_resource_labels<'r>(
        mut self,
        resources: impl IntoIterator<Item = &'r BTreeMap<String, String>>,
    ) -> Self {
        let resources: Vec<&BTreeMap<String, String>> = resources.into_iter().collect();
        let (union, intersection) = union_and_intersection(&resources);
        self.resource_labels_union = union;
        self.resource_labels_intersection = intersection;
        self
    }

    /// The map a condition variable names.
    pub(crate) fn map(&self, map: super::compile::MapVar) -> &StringSets {
        use super::compile::MapVar;
        match map {
            MapVar::SystemAnnotations => &self.system_annotations,
            MapVar::UserTraits => &self.user_traits,
            MapVar::LabelsUnion => &self.resource_labels_union,
            MapVar::LabelsIntersection => &self.resource_labels_intersection,
        }
    }
}

/// Teleport's union (every value of every resource under its key) and intersection (the keys
/// every resource has, with the first resource's value, kept only where all agree).
fn union_and_intersection(resources: &[&BTreeMap<String, String>]) -> (StringSets, StringSets) {
    let mut union = StringSets::new();
    for labels in resources {
        for (key, value) in labels.iter() {
            union.entry(key.clone()).or_default().insert(value.clone());
        }
    }
    let mut intersection = StringSets::new();
    if let Some(first) = resources.first() {
        for (key, value) in first.iter() {
            if resources
                .iter()
                .all(|labels| labels.get(key) == Some(value))
            {
                intersection.insert(key.clone(), BTreeSet::from([value.clone()]));
            }
        }
    }
    (union, intersection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn union_collects_every_value_and_intersection_only_shared_ones() {
        let a = labels(&[("env", "prod"), ("team", "db"), ("region", "eu")]);
        let b = labels(&[("env", "dev"), ("team", "db")]);
        let facts = RequestFacts::default().with_resource_labels([&a, &b]);
        assert_eq!(
            facts.resource_labels_union["env"],
            BTreeSet::from(["dev".to_string(), "prod".to_string()])
        );
        assert_eq!(
            facts.resource_labels_union["region"],
            BTreeSet::from(["eu".to_string()])
        );
        assert_eq!(
            facts
                .resource_labels_intersection
                .keys()
                .collect::<Vec<_>>(),
            vec!["team"]
        );
    }

    #[test]
    fn no_resources_means_empty_maps() {
        let facts = RequestFacts::default().with_resource_labels([]);
        assert!(facts.resource_labels_union.is_empty());
        assert!(facts.resource_labels_intersection.is_empty());
    }

    #[test]
    fn expiry_prefers_resource_expiry_then_metadata() {
        let ts = |s| prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        };
        let mut wire = types::AccessRequestV3 {
            metadata: Some(types::Metadata {
                name: "req-1".into(),
                expires: Some(ts(2_000_000_000)),
                ..Default::default()
            }),
            spec: Some(types::AccessRequestSpecV3 {
                user: "bob".into(),
                roles: vec!["dba".into(), "dba".into()],
                resource_expiry: Some(ts(1_900_000_000)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let facts = RequestFacts::from_wire(&wire);
        assert_eq!(facts.expiry.unwrap().timestamp(), 1_900_000_000);
        assert_eq!(facts.roles.len(), 1);
        wire.spec.as_mut().unwrap().resource_expiry = None;
        assert_eq!(
            RequestFacts::from_wire(&wire).expiry.unwrap().timestamp(),
            2_000_000_000
        );
    }
}

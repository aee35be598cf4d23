//! Code generated from `proto/`, a wire-compatible subset of Teleport's protos.
#![allow(clippy::all, missing_docs)]

pub mod proto {
    tonic::include_proto!("proto");
}
pub mod types {
    tonic::include_proto!("types");
}
pub mod wrappers {
    tonic::include_proto!("wrappers");
}
/// Teleport's `teleport.*.v1` packages (RFD 153 resources and their services).
pub mod teleport {
    pub mod header {
        pub mod v1 {
            tonic::include_proto!("teleport.header.v1");
        }
    }
    pub mod accessmonitoringrules {
        pub mod v1 {
            tonic::include_proto!("teleport.accessmonitoringrules.v1");
        }
    }
    pub mod users {
        pub mod v1 {
            tonic::include_proto!("teleport.users.v1");
        }
    }
}

#[cfg(test)]
mod tests {
    //! `proto/` is a subset of Teleport's files: a newer server's fields must decode without
    //! harm, and every field the subset declares must come through intact.
    use prost::Message as _;
    use prost::encoding::{WireType, encode_key, encode_varint};

    use super::{proto, types};

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 7 })
    }

    /// A request carrying every field the subset declares since v18 (and the older ones a
    /// button needs).
    fn v18_request() -> types::AccessRequestV3 {
        types::AccessRequestV3 {
            kind: "access_request".into(),
            version: "v3".into(),
            metadata: Some(types::Metadata {
                name: "req-1".into(),
                expires: ts(1_800_003_600),
                ..Default::default()
            }),
            spec: Some(types::AccessRequestSpecV3 {
                user: "bob".into(),
                roles: vec!["dba".into()],
                state: types::RequestState::Promoted as i32,
                requested_resource_i_ds: vec![types::ResourceId {
                    cluster_name: "prod".into(),
                    kind: "app".into(),
                    name: "console".into(),
                    sub_resource_name: String::new(),
                }],
                access_list: Some(types::PromotedAccessList {
                    name: "al-1".into(),
                    title: "Prod DBAs".into(),
                }),
                assume_start_time: ts(1_800_000_600),
                resource_expiry: ts(1_800_007_200),
                request_kind: types::AccessRequestKind::LongTerm as i32,
                long_term_grouping: Some(types::LongTermResourceGrouping {}),
                requested_resource_access_i_ds: vec![types::ResourceAccessId {
                    id: Some(types::ResourceId {
                        cluster_name: "prod".into(),
                        kind: "app".into(),
                        name: "console".into(),
                        sub_resource_name: String::new(),
                    }),
                    constraints: Some(types::ResourceConstraints {
                        version: "v1".into(),
                        details: Some(types::resource_constraints::Details::AwsConsole(
                            types::AwsConsoleResourceConstraints {
                                role_arns: vec!["arn:aws:iam::1:role/A".into()],
                            },
                        )),
                    }),
                }],
                reviews: vec![types::AccessReview {
                    author: "alice".into(),
                    proposed_state: types::RequestState::Approved as i32,
                    access_list: Some(types::PromotedAccessList {
                        name: "al-1".into(),
                        title: "Prod DBAs".into(),
                    }),
                    assume_start_time: ts(1_800_000_600),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn length_delimited(tag: u32, payload: &[u8], out: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn varint_field(tag: u32, value: u64, out: &mut Vec<u8>) {
        encode_key(tag, WireType::Varint, out);
        encode_varint(value, out);
    }

    #[test]
    fn every_declared_field_round_trips() {
        let request = v18_request();
        let bytes = request.encode_to_vec();
        let decoded = types::AccessRequestV3::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, request);
        assert_eq!(
            decoded.encode_to_vec(),
            bytes,
            "re-encodes to the same bytes"
        );

        let setter = proto::RequestStateSetter {
            id: "req-1".into(),
            state: types::RequestState::Approved as i32,
            assume_start_time: ts(1_800_000_600),
            ..Default::default()
        };
        let back = proto::RequestStateSetter::decode(setter.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, setter);

        let filter = types::AccessRequestFilter {
            scope: types::AccessRequestScope::NeedsReview as i32,
            ..Default::default()
        };
        let bytes = filter.encode_to_vec();
        // Scope is an enum on the wire (a varint), as Teleport declares it: field 5, varint 2.
        assert_eq!(bytes, vec![5 << 3, 2]);
        assert_eq!(
            types::AccessRequestFilter::decode(bytes.as_slice())
                .unwrap()
                .scope(),
            types::AccessRequestScope::NeedsReview
        );
    }

    #[test]
    fn fields_and_oneof_members_the_subset_lacks_are_skipped_without_loss() {
        let known = v18_request();
        let spec = known.spec.clone().unwrap();

        // A constraint kind from a newer Teleport (a oneof member the subset lacks) beside
        // the aws_console one: the ResourceAccessID is rebuilt by hand.
        let mut constraints = Vec::new();
        length_delimited(1, b"v1", &mut constraints);
        length_delimited(12, b"\x0a\x05admin", &mut constraints);
        let mut access_id = Vec::new();
        length_delimited(
            1,
            &spec.requested_resource_access_i_ds[0]
                .id
                .as_ref()
                .unwrap()
                .encode_to_vec(),
            &mut access_id,
        );
        length_delimited(2, &constraints, &mut access_id);

        // The spec as a newer server sends it: every declared field, then fields the subset
        // leaves out (23 DryRunEnrichment, 27 a future message, 99 a future varint) and the
        // second ResourceAccessID with its unknown constraint.
        let mut spec_bytes = spec.encode_to_vec();
        length_delimited(23, b"\x0a\x03why", &mut spec_bytes);
        length_delimited(27, b"\x08\x01", &mut spec_bytes);
        varint_field(99, 42, &mut spec_bytes);
        length_delimited(26, &access_id, &mut spec_bytes);

        let mut request_bytes = types::AccessRequestV3 {
            spec: None,
            ..known.clone()
        }
        .encode_to_vec();
        length_delimited(5, &spec_bytes, &mut request_bytes);
        length_delimited(6, b"status we do not know", &mut request_bytes);

        // Inside a watch event, with a oneof member (99, a future resource) the subset
        // lacks in another event.
        let mut event = Vec::new();
        varint_field(1, proto::Operation::Put as u64, &mut event);
        length_delimited(14, &request_bytes, &mut event);
        let decoded = proto::Event::decode(event.as_slice()).unwrap();
        let Some(proto::event::Resource::AccessRequest(got)) = decoded.resource else {
            panic!("the access request must decode: {decoded:?}")
        };
        let got_spec = got.spec.clone().unwrap();
        // Everything known is intact; the extra ResourceAccessID arrives with its
        // constraints' oneof empty (unknown), its id and version intact.
        assert_eq!(
            got_spec.requested_resource_access_i_ds[0],
            spec.requested_resource_access_i_ds[0]
        );
        let extra = &got_spec.requested_resource_access_i_ds[1];
        assert_eq!(extra.id, spec.requested_resource_access_i_ds[0].id);
        let extra_constraints = extra.constraints.as_ref().unwrap();
        assert_eq!(extra_constraints.version, "v1");
        assert_eq!(extra_constraints.details, None);
        let mut without_extra = got.clone();
        without_extra
            .spec
            .as_mut()
            .unwrap()
            .requested_resource_access_i_ds
            .truncate(1);
        assert_eq!(without_extra, known);

        let mut amr = Vec::new();
        varint_field(1, proto::Operation::Put as u64, &mut amr);
        length_delimited(99, b"\x12\x04rule", &mut amr);
        let other = proto::Event::decode(amr.as_slice()).unwrap();
        assert_eq!(other.resource, None, "an unknown oneof member is skipped");

        // And the plugin's model sees the request as a v18 server meant it.
        let model = crate::request::AccessRequest::from(&got);
        assert_eq!(model.kind, crate::request::RequestKind::LongTerm);
        assert_eq!(
            model.requested_resources[1].constraints,
            Some(crate::request::ResourceConstraints::Unknown)
        );
    }
}

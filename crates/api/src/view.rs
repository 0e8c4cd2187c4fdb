//! Machinery for partial typed views of third-party resources.
//!
//! A view names the fields meshmig reasons about and keeps every other field in a flattened
//! map, so an object read from the API and written back is unchanged, whatever version of
//! Istio or Sail produced it.

/// Declares a partial typed view of a third-party kind: a root struct with `apiVersion`,
/// `kind`, `metadata`, `spec` (typed), `status` (kept as JSON) and every other top-level field,
/// plus a [`kube::Resource`] implementation so it works with `kube::Api`.
#[macro_export]
macro_rules! partial_view {
    (
        $(#[$meta:meta])*
        $name:ident, $spec:ty, group = $group:literal, version = $version:literal,
        kind = $kind:literal, plural = $plural:literal, scope = $scope:ty
    ) => {
        $(#[$meta])*
        #[derive(::serde::Serialize, ::serde::Deserialize, Clone, Debug, PartialEq, Default)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            /// `group/version` as read (any served version is accepted).
            #[serde(default)]
            pub api_version: String,
            /// Always the kind of this view.
            #[serde(default)]
            pub kind: String,
            /// Standard object metadata.
            #[serde(default)]
            pub metadata: ::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
            /// The part of the spec meshmig reasons about; everything else is kept.
            #[serde(default)]
            pub spec: $spec,
            /// Status as written by its controller, kept verbatim.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<::serde_json::Value>,
            /// Any other top-level field.
            #[serde(flatten)]
            pub extra: ::std::collections::BTreeMap<String, ::serde_json::Value>,
        }

        impl $name {
            /// API group.
            pub const GROUP: &'static str = $group;
            /// Version meshmig writes.
            pub const VERSION: &'static str = $version;
            /// Kind.
            pub const KIND: &'static str = $kind;

            fn default_api_version() -> String {
                concat!($group, "/", $version).to_string()
            }

            fn default_kind() -> String {
                $kind.to_string()
            }

            /// A new object with the given name and spec, at the version meshmig writes.
            pub fn new(name: &str, spec: $spec) -> Self {
                Self {
                    api_version: Self::default_api_version(),
                    kind: Self::default_kind(),
                    metadata: ::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        name: Some(name.to_string()),
                        ..Default::default()
                    },
                    spec,
                    status: None,
                    extra: Default::default(),
                }
            }
        }

        impl ::kube::Resource for $name {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> ::std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> ::std::borrow::Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> ::std::borrow::Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> ::std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut ::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// Unknown fields of a struct, kept verbatim.
pub type Extra = std::collections::BTreeMap<String, serde_json::Value>;

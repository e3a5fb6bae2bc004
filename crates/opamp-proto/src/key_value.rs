//! Constructors for the attribute pairs every agent description is made of.

use crate::v1;

impl v1::KeyValue {
    /// A `key = "value"` attribute, the shape of nearly every `AgentDescription` entry.
    ///
    /// ```
    /// use opamp_proto::v1;
    /// let name = v1::KeyValue::string("service.name", "otelcol");
    /// assert_eq!(name.key, "service.name");
    /// assert_eq!(
    ///     name.value.and_then(|v| v.value),
    ///     Some(v1::any_value::Value::StringValue("otelcol".into()))
    /// );
    /// ```
    pub fn string(key: impl Into<String>, value: impl Into<String>) -> Self {
        v1::KeyValue {
            key: key.into(),
            value: Some(v1::AnyValue {
                value: Some(v1::any_value::Value::StringValue(value.into())),
            }),
        }
    }
}

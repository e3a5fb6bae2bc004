//! Size and shape checks on peer messages, run before any state changes.
//!
//! Decoding already bounds the total message size; these checks bound the number of
//! entries in maps and lists, and the nesting of recursive structures, so a small but
//! hostile message cannot make the session (or the application it feeds) do unbounded
//! work.

use opamp_proto::{InstanceUid, v1};

use crate::{SessionError, SessionLimits};

/// Parses a 16-byte instance uid field.
pub(crate) fn instance_uid(field: &'static str, bytes: &[u8]) -> Result<InstanceUid, SessionError> {
    InstanceUid::from_slice(bytes)
        .map_err(|source| SessionError::InvalidInstanceUid { field, source })
}

fn entries(field: &'static str, count: usize, limits: &SessionLimits) -> Result<(), SessionError> {
    if count > limits.max_map_entries {
        return Err(SessionError::TooManyEntries {
            field,
            count,
            limit: limits.max_map_entries,
        });
    }
    Ok(())
}

fn headers(
    field: &'static str,
    headers: Option<&v1::Headers>,
    limits: &SessionLimits,
) -> Result<(), SessionError> {
    entries(field, headers.map_or(0, |h| h.headers.len()), limits)
}

/// Checks a message from the server before the agent acts on it.
pub(crate) fn server_to_agent(
    msg: &v1::ServerToAgent,
    limits: &SessionLimits,
) -> Result<(), SessionError> {
    if let Some(offer) = &msg.packages_available {
        entries("PackagesAvailable.packages", offer.packages.len(), limits)?;
        for package in offer.packages.values() {
            if let Some(file) = &package.file {
                headers("DownloadableFile.headers", file.headers.as_ref(), limits)?;
            }
        }
    }
    if let Some(config) = msg.remote_config.as_ref().and_then(|c| c.config.as_ref()) {
        entries(
            "AgentRemoteConfig.config.config_map",
            config.config_map.len(),
            limits,
        )?;
    }
    if let Some(offers) = &msg.connection_settings {
        entries(
            "ConnectionSettingsOffers.other_connections",
            offers.other_connections.len(),
            limits,
        )?;
        if let Some(opamp) = &offers.opamp {
            headers(
                "OpAMPConnectionSettings.headers",
                opamp.headers.as_ref(),
                limits,
            )?;
        }
        for telemetry in [&offers.own_metrics, &offers.own_traces, &offers.own_logs]
            .into_iter()
            .flatten()
        {
            headers(
                "TelemetryConnectionSettings.headers",
                telemetry.headers.as_ref(),
                limits,
            )?;
        }
        for other in offers.other_connections.values() {
            headers(
                "OtherConnectionSettings.headers",
                other.headers.as_ref(),
                limits,
            )?;
            entries(
                "OtherConnectionSettings.other_settings",
                other.other_settings.len(),
                limits,
            )?;
        }
    }
    if let Some(custom) = &msg.custom_capabilities {
        entries(
            "ServerToAgent.custom_capabilities",
            custom.capabilities.len(),
            limits,
        )?;
    }
    if let Some(identification) = &msg.agent_identification {
        instance_uid(
            "AgentIdentification.new_instance_uid",
            &identification.new_instance_uid,
        )?;
    }
    Ok(())
}

/// Checks a message from the agent before the server merges it.
pub(crate) fn agent_to_server(
    msg: &v1::AgentToServer,
    limits: &SessionLimits,
) -> Result<InstanceUid, SessionError> {
    let uid = instance_uid("AgentToServer.instance_uid", &msg.instance_uid)?;
    if let Some(description) = &msg.agent_description {
        agent_description(description, limits)?;
    }
    if let Some(health) = &msg.health {
        let mut budget = limits.max_map_entries;
        health_tree(health, 0, &mut budget, limits)?;
    }
    if let Some(config) = msg
        .effective_config
        .as_ref()
        .and_then(|c| c.config_map.as_ref())
    {
        entries(
            "EffectiveConfig.config_map",
            config.config_map.len(),
            limits,
        )?;
    }
    if let Some(statuses) = &msg.package_statuses {
        let count = statuses.packages.len();
        entries("PackageStatuses.packages", count, limits)?;
        if count > limits.max_package_statuses {
            return Err(SessionError::TooManyEntries {
                field: "PackageStatuses.packages",
                count,
                limit: limits.max_package_statuses,
            });
        }
    }
    if let Some(custom) = &msg.custom_capabilities {
        entries(
            "AgentToServer.custom_capabilities",
            custom.capabilities.len(),
            limits,
        )?;
    }
    if let Some(components) = &msg.available_components {
        let mut budget = limits.max_map_entries;
        component_tree(&components.components, 0, &mut budget, limits)?;
    }
    Ok(uid)
}

/// Bounds what a server keeps per agent from its description: attribute count, size of
/// each attribute and of the whole.
fn agent_description(
    description: &v1::AgentDescription,
    limits: &SessionLimits,
) -> Result<(), SessionError> {
    const FIELD: &str = "AgentDescription attributes";
    let count =
        description.identifying_attributes.len() + description.non_identifying_attributes.len();
    entries(FIELD, count, limits)?;
    if count > limits.max_description_attributes {
        return Err(SessionError::TooManyEntries {
            field: FIELD,
            count,
            limit: limits.max_description_attributes,
        });
    }
    let mut total = 0usize;
    for attribute in description
        .identifying_attributes
        .iter()
        .chain(&description.non_identifying_attributes)
    {
        let size = attribute
            .key
            .len()
            .saturating_add(attribute.value.as_ref().map_or(0, any_value_bytes));
        if size > limits.max_attribute_bytes {
            return Err(SessionError::TooLarge {
                field: "AgentDescription attribute",
                size,
                limit: limits.max_attribute_bytes,
            });
        }
        total = total.saturating_add(size);
    }
    if total > limits.max_description_bytes {
        return Err(SessionError::TooLarge {
            field: "AgentDescription",
            size: total,
            limit: limits.max_description_bytes,
        });
    }
    Ok(())
}

/// The bytes an attribute value holds (text and bytes by length, scalars as 8, lists and
/// maps as the sum of their entries). The decoder's recursion limit bounds the nesting.
fn any_value_bytes(value: &v1::AnyValue) -> usize {
    use v1::any_value::Value;
    match &value.value {
        None => 0,
        Some(Value::StringValue(text)) => text.len(),
        Some(Value::BytesValue(bytes)) => bytes.len(),
        Some(Value::BoolValue(_) | Value::IntValue(_) | Value::DoubleValue(_)) => 8,
        Some(Value::ArrayValue(array)) => array
            .values
            .iter()
            .map(any_value_bytes)
            .fold(0, usize::saturating_add),
        Some(Value::KvlistValue(list)) => list
            .values
            .iter()
            .map(|kv| kv.key.len() + kv.value.as_ref().map_or(0, any_value_bytes))
            .fold(0, usize::saturating_add),
    }
}

/// Walks a health tree, charging every entry against one shared budget.
fn health_tree(
    health: &v1::ComponentHealth,
    depth: usize,
    budget: &mut usize,
    limits: &SessionLimits,
) -> Result<(), SessionError> {
    const FIELD: &str = "ComponentHealth.component_health_map";
    if depth > limits.max_nesting_depth {
        return Err(SessionError::TooDeep {
            field: FIELD,
            limit: limits.max_nesting_depth,
        });
    }
    let count = health.component_health_map.len();
    *budget = budget
        .checked_sub(count)
        .ok_or(SessionError::TooManyEntries {
            field: FIELD,
            count: limits.max_map_entries.saturating_add(1),
            limit: limits.max_map_entries,
        })?;
    for child in health.component_health_map.values() {
        health_tree(child, depth + 1, budget, limits)?;
    }
    Ok(())
}

/// Walks an available-components tree like [`health_tree`].
fn component_tree(
    components: &std::collections::HashMap<String, v1::ComponentDetails>,
    depth: usize,
    budget: &mut usize,
    limits: &SessionLimits,
) -> Result<(), SessionError> {
    const FIELD: &str = "AvailableComponents.components";
    if depth > limits.max_nesting_depth {
        return Err(SessionError::TooDeep {
            field: FIELD,
            limit: limits.max_nesting_depth,
        });
    }
    *budget = budget
        .checked_sub(components.len())
        .ok_or(SessionError::TooManyEntries {
            field: FIELD,
            count: limits.max_map_entries.saturating_add(1),
            limit: limits.max_map_entries,
        })?;
    for details in components.values() {
        component_tree(&details.sub_component_map, depth + 1, budget, limits)?;
    }
    Ok(())
}

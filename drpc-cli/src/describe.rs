//! `drpc describe` and `drpc list --long`: services, methods, messages and enums as
//! proto-like text.

use std::fmt::Write as _;

use prost_reflect::{
    Cardinality, DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    MethodDescriptor, ServiceDescriptor,
};

/// `/pkg.Service/Method(pkg.Req) returns (stream pkg.Resp)`.
pub(crate) fn method_line(m: &MethodDescriptor) -> String {
    format!(
        "/{}/{}({}{}) returns ({}{})",
        m.parent_service().full_name(),
        m.name(),
        if m.is_client_streaming() {
            "stream "
        } else {
            ""
        },
        m.input().full_name(),
        if m.is_server_streaming() {
            "stream "
        } else {
            ""
        },
        m.output().full_name(),
    )
}

/// The text describing `symbol`, when `pool` defines it.
pub(crate) fn describe(pool: &DescriptorPool, symbol: &str) -> Option<String> {
    let symbol = symbol.trim_start_matches('.');
    if let Some(s) = pool.get_service_by_name(symbol) {
        return Some(format!("{symbol} is a service:\n{}", service(&s)));
    }
    if let Some(m) = pool.get_message_by_name(symbol) {
        return Some(format!("{symbol} is a message:\n{}", message(&m, "")));
    }
    if let Some(e) = pool.get_enum_by_name(symbol) {
        return Some(format!("{symbol} is an enum:\n{}", enumeration(&e, "")));
    }
    let (parent, member) = symbol.rsplit_once('.')?;
    if let Some(s) = pool.get_service_by_name(parent)
        && let Some(m) = s.methods().find(|m| m.name() == member)
    {
        return Some(format!("{symbol} is a method:\n{}\n", rpc(&m)));
    }
    if let Some(msg) = pool.get_message_by_name(parent)
        && let Some(f) = msg.get_field_by_name(member)
    {
        return Some(format!("{symbol} is a field:\n{}\n", field(&f)));
    }
    None
}

fn rpc(m: &MethodDescriptor) -> String {
    format!(
        "rpc {}({}{}) returns ({}{});",
        m.name(),
        if m.is_client_streaming() {
            "stream "
        } else {
            ""
        },
        m.input().full_name(),
        if m.is_server_streaming() {
            "stream "
        } else {
            ""
        },
        m.output().full_name(),
    )
}

fn service(s: &ServiceDescriptor) -> String {
    let mut out = format!("service {} {{\n", s.name());
    for m in s.methods() {
        let _ = writeln!(out, "  {}", rpc(&m));
    }
    out.push_str("}\n");
    out
}

fn type_name(f: &FieldDescriptor) -> String {
    match f.kind() {
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
        k => format!("{k:?}").to_lowercase(),
    }
}

fn field(f: &FieldDescriptor) -> String {
    let ty = if f.is_map() {
        match f.kind() {
            Kind::Message(entry) => format!(
                "map<{}, {}>",
                type_name(&entry.map_entry_key_field()),
                type_name(&entry.map_entry_value_field())
            ),
            _ => type_name(f),
        }
    } else {
        type_name(f)
    };
    let label = match f.cardinality() {
        Cardinality::Repeated if !f.is_map() => "repeated ",
        Cardinality::Optional if f.field_descriptor_proto().proto3_optional() => "optional ",
        Cardinality::Required => "required ",
        _ => "",
    };
    format!("{label}{ty} {} = {};", f.name(), f.number())
}

fn message(m: &MessageDescriptor, indent: &str) -> String {
    let mut out = format!("{indent}message {} {{\n", m.name());
    for f in m.fields() {
        let _ = writeln!(out, "{indent}  {}", field(&f));
    }
    for child in m.child_messages().filter(|c| !c.is_map_entry()) {
        out.push_str(&message(&child, &format!("{indent}  ")));
    }
    for e in m.child_enums() {
        out.push_str(&enumeration(&e, &format!("{indent}  ")));
    }
    let _ = writeln!(out, "{indent}}}");
    out
}

fn enumeration(e: &EnumDescriptor, indent: &str) -> String {
    let mut out = format!("{indent}enum {} {{\n", e.name());
    for v in e.values() {
        let _ = writeln!(out, "{indent}  {} = {};", v.name(), v.number());
    }
    let _ = writeln!(out, "{indent}}}");
    out
}

//! The few helpers over tract's prost-generated ONNX types used to build protos: tensors, attributes, value
//! infos, a node builder with fresh names and shared constants, and a stable text form of nodes and functions
//! (golden tests, debugging).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
pub use tract_onnx::pb::attribute_proto::AttributeType;
pub use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::type_proto;
pub use tract_onnx::pb::{
    AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The float type of an export: weights, activations and the float graph inputs and outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FloatType {
    /// IEEE float32.
    F32,
    /// IEEE float16.
    F16,
    /// bfloat16.
    BF16,
}

impl FloatType {
    /// The ONNX element type.
    pub fn data_type(self) -> DataType {
        match self {
            FloatType::F32 => DataType::Float,
            FloatType::F16 => DataType::Float16,
            FloatType::BF16 => DataType::Bfloat16,
        }
    }

    /// Bytes per element.
    pub fn size_of(self) -> usize {
        match self {
            FloatType::F32 => 4,
            FloatType::F16 | FloatType::BF16 => 2,
        }
    }

    /// Lower-case name (`f32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            FloatType::F32 => "f32",
            FloatType::F16 => "f16",
            FloatType::BF16 => "bf16",
        }
    }

    /// Little-endian bytes of `values` converted to this type (round to nearest even).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            FloatType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            FloatType::F16 => {
                values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()
            }
            FloatType::BF16 => {
                values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect()
            }
        }
    }
}

/// A tensor named `name` of `data_type` with little-endian `raw` contents.
pub fn tensor(name: &str, data_type: DataType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        data_type: data_type as i32,
        dims: dims.to_vec(),
        raw_data: raw,
        ..Default::default()
    }
}

/// An int64 tensor.
pub fn tensor_i64(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    tensor(name, DataType::Int64, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// A float64 tensor.
pub fn tensor_f64(name: &str, dims: &[i64], values: &[f64]) -> TensorProto {
    tensor(name, DataType::Double, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// A float tensor of type `t`.
pub fn tensor_float(name: &str, t: FloatType, dims: &[i64], values: &[f32]) -> TensorProto {
    tensor(name, t.data_type(), dims, t.encode(values))
}

/// A bool tensor.
pub fn tensor_bool(name: &str, dims: &[i64], values: &[bool]) -> TensorProto {
    tensor(name, DataType::Bool, dims, values.iter().map(|&b| u8::from(b)).collect())
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto { name: name.to_string(), r#type: ty as i32, ..Default::default() }
}

/// An INT attribute.
pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { i: v, ..attr(name, AttributeType::Int) }
}

/// A FLOAT attribute.
pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { f: v, ..attr(name, AttributeType::Float) }
}

/// A STRING attribute.
pub fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto { s: v.as_bytes().to_vec(), ..attr(name, AttributeType::String) }
}

/// An INTS attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { ints: v.to_vec(), ..attr(name, AttributeType::Ints) }
}

/// A TENSOR attribute.
pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto { t: Some(t), ..attr(name, AttributeType::Tensor) }
}

/// An attribute of a function body node that takes the value of the function's attribute `target`.
pub fn attr_ref(name: &str, target: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto { ref_attr_name: target.to_string(), ..attr(name, ty) }
}

/// One dimension of a value info: a size or a `dim_param`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DimSpec {
    /// A fixed size (`dim_value`).
    Value(i64),
    /// A symbolic size (`dim_param`).
    Param(String),
}

/// A tensor value info.
pub fn value_info(name: &str, elem: DataType, dims: &[DimSpec]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                DimSpec::Value(v) => dimension::Value::DimValue(*v),
                DimSpec::Param(p) => dimension::Value::DimParam(p.clone()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

/// An opset import.
pub fn opset(domain: &str, version: i64) -> OperatorSetIdProto {
    OperatorSetIdProto { domain: domain.to_string(), version }
}

/// Builds a list of nodes. Every value and node gets a unique name `{scope}{hint}`; constants are `Constant`
/// nodes shared by every reader of the same value (named after their value, without the scope).
#[derive(Default)]
pub struct Builder {
    /// Prefix of the names of new values and nodes.
    pub scope: String,
    /// The nodes built so far, in order.
    pub nodes: Vec<NodeProto>,
    taken: BTreeSet<String>,
    consts: BTreeMap<String, String>,
}

impl Builder {
    /// An empty builder with no scope.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Marks `name` as used, so that no generated value takes it.
    pub fn reserve(&mut self, name: &str) {
        self.taken.insert(name.to_string());
    }

    /// A fresh value name from `hint`.
    pub fn fresh(&mut self, hint: &str) -> String {
        let base = format!("{}{hint}", self.scope);
        let mut name = base.clone();
        let mut n = 1;
        while self.taken.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    /// Appends a node `op_type(inputs) -> outputs` named `name`.
    pub fn push(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            name: name.to_string(),
            op_type: op_type.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// A node with one new output named from `hint`; the node takes the output's name.
    pub fn op(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        hint: &str,
    ) -> String {
        let out = self.fresh(hint);
        self.push(&out, op_type, inputs, &[&out], attrs);
        out
    }

    /// A node whose one output is the given name `out` (a reserved or caller-owned name); the node takes it too.
    pub fn op_to(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<AttributeProto>, out: &str) {
        self.taken.insert(out.to_string());
        self.push(out, op_type, inputs, &[out], attrs);
    }

    /// Renames the value `from` to `to` in every node built so far (outputs, inputs and node names).
    pub fn rename(&mut self, from: &str, to: &str) {
        self.taken.insert(to.to_string());
        for n in &mut self.nodes {
            for v in n.output.iter_mut().chain(n.input.iter_mut()) {
                if v == from {
                    *v = to.to_string();
                }
            }
            if n.name == from {
                n.name = to.to_string();
            }
        }
    }

    /// A node with one new output per hint; the node takes the first output's name.
    pub fn op_multi(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        hints: &[&str],
    ) -> Vec<String> {
        let outs: Vec<String> = hints.iter().map(|h| self.fresh(h)).collect();
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        self.push(&outs[0], op_type, inputs, &refs, attrs);
        outs
    }

    /// A shared `Constant` node holding `t` (whose name is ignored); `key` identifies the value and names it
    /// when short.
    fn konst(&mut self, key: String, mut t: TensorProto) -> String {
        if let Some(name) = self.consts.get(&key) {
            return name.clone();
        }
        let base = if key.len() <= 48 {
            key.clone()
        } else {
            let dtype = dtype_name(t.data_type);
            format!(
                "const.{dtype}.{}",
                t.dims.iter().map(i64::to_string).collect::<Vec<_>>().join("x")
            )
        };
        let mut name = base.clone();
        let mut n = 1;
        while self.taken.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.taken.insert(name.clone());
        t.name = String::new();
        self.push(&name, "Constant", &[], &[&name], vec![attr_tensor("value", t)]);
        self.consts.insert(key, name.clone());
        name
    }

    /// A 1-D int64 constant.
    pub fn i64s(&mut self, v: &[i64]) -> String {
        let text = v.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        self.konst(format!("const.i64[{text}]"), tensor_i64("", &[v.len() as i64], v))
    }

    /// A scalar int64 constant.
    pub fn i64_scalar(&mut self, v: i64) -> String {
        self.konst(format!("const.i64.{v}"), tensor_i64("", &[], &[v]))
    }

    /// A scalar float constant of type `t`.
    pub fn float(&mut self, v: f32, t: FloatType) -> String {
        self.konst(format!("const.{}.{}", t.name(), float_text(v)), tensor_float("", t, &[], &[v]))
    }

    /// A 1-D float32 constant.
    pub fn f32s(&mut self, v: &[f32]) -> String {
        let text = v.iter().map(|&x| float_text(x)).collect::<Vec<_>>().join(",");
        self.konst(
            format!("const.f32[{text}]"),
            tensor_float("", FloatType::F32, &[v.len() as i64], v),
        )
    }

    /// A 1-D float64 constant.
    pub fn f64s(&mut self, v: &[f64]) -> String {
        let text = v.iter().map(|&x| float_text(x)).collect::<Vec<_>>().join(",");
        self.konst(format!("const.f64[{text}]"), tensor_f64("", &[v.len() as i64], v))
    }

    /// A scalar bool constant.
    pub fn bool_scalar(&mut self, v: bool) -> String {
        self.konst(format!("const.bool.{v}"), tensor_bool("", &[], &[v]))
    }

    /// A `Constant` scalar holding the value of the enclosing function's attribute `attr` (`value_int` or
    /// `value_float` by `ty`).
    pub fn attr_value(&mut self, attr: &str, ty: AttributeType) -> String {
        let field = match ty {
            AttributeType::Float => "value_float",
            _ => "value_int",
        };
        let out = self.fresh(attr);
        self.push(&out, "Constant", &[], &[&out], vec![attr_ref(field, attr, ty)]);
        out
    }

    /// `Cast(x, to)`.
    pub fn cast(&mut self, x: &str, to: DataType, hint: &str) -> String {
        self.op("Cast", &[x], vec![attr_int("to", to as i64)], hint)
    }

    /// `Transpose(x, perm)`.
    pub fn transpose(&mut self, x: &str, perm: &[i64], hint: &str) -> String {
        self.op("Transpose", &[x], vec![attr_ints("perm", perm)], hint)
    }

    /// `Unsqueeze(x, axes)`.
    pub fn unsqueeze(&mut self, x: &str, axes: &[i64], hint: &str) -> String {
        let a = self.i64s(axes);
        self.op("Unsqueeze", &[x, &a], vec![], hint)
    }

    /// `Squeeze(x, axes)`.
    pub fn squeeze(&mut self, x: &str, axes: &[i64], hint: &str) -> String {
        let a = self.i64s(axes);
        self.op("Squeeze", &[x, &a], vec![], hint)
    }

    /// `Reshape(x, shape)`.
    pub fn reshape(&mut self, x: &str, shape: &str, hint: &str) -> String {
        self.op("Reshape", &[x, shape], vec![], hint)
    }

    /// Axes `start..end` of the shape of `x`, as a 1-D int64 tensor.
    pub fn shape_of(&mut self, x: &str, start: i64, end: i64, hint: &str) -> String {
        self.op("Shape", &[x], vec![attr_int("start", start), attr_int("end", end)], hint)
    }

    /// The shape of `x`, one `Shape` node per value.
    pub fn shape(&mut self, x: &str) -> String {
        let key = format!("shape:{x}");
        if let Some(name) = self.consts.get(&key) {
            return name.clone();
        }
        let s = self.op("Shape", &[x], vec![], &format!("{x}_shape"));
        self.consts.insert(key, s.clone());
        s
    }

    /// Axis `axis` of the shape of `x` as an int64 scalar.
    pub fn dim(&mut self, x: &str, axis: i64, hint: &str) -> String {
        let s = self.shape(x);
        let i = self.i64_scalar(axis);
        self.op("Gather", &[&s, &i], vec![attr_int("axis", 0)], hint)
    }

    /// `Concat(xs, axis)`.
    pub fn concat(&mut self, xs: &[&str], axis: i64, hint: &str) -> String {
        self.op("Concat", xs, vec![attr_int("axis", axis)], hint)
    }

    /// A binary op.
    pub fn bin(&mut self, op_type: &str, a: &str, b: &str, hint: &str) -> String {
        self.op(op_type, &[a, b], vec![], hint)
    }

    /// A unary op.
    pub fn un(&mut self, op_type: &str, a: &str, hint: &str) -> String {
        self.op(op_type, &[a], vec![], hint)
    }

    /// `TopK(x, k)` over the last axis: `(values, indices)`; largest first, or smallest with `largest = false`.
    pub fn top_k(&mut self, x: &str, k: &str, largest: bool, hint: &str) -> (String, String) {
        let attrs = vec![attr_int("axis", -1), attr_int("largest", i64::from(largest))];
        let outs = self.op_multi(
            "TopK",
            &[x, k],
            attrs,
            &[&format!("{hint}_values"), &format!("{hint}_indices")],
        );
        (outs[0].clone(), outs[1].clone())
    }
}

/// A float in plain notation between 1e-3 and 1e6 (and for 0), in scientific notation otherwise.
pub fn float_text<T: std::fmt::Display + std::fmt::LowerExp + Into<f64> + Copy>(v: T) -> String {
    let x: f64 = v.into();
    if x == 0.0 || !x.is_finite() || (1e-3..1e6).contains(&x.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

fn dtype_name(dt: i32) -> String {
    DataType::try_from(dt).map_or_else(|_| format!("type{dt}"), |d| d.as_str_name().to_lowercase())
}

fn tensor_text(t: &TensorProto) -> String {
    let dims = t.dims.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let raw = &t.raw_data;
    let values: Vec<String> = match DataType::try_from(t.data_type) {
        Ok(DataType::Int64) => raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()).to_string())
            .collect(),
        Ok(DataType::Float) => raw
            .chunks_exact(4)
            .map(|c| float_text(f32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        Ok(DataType::Double) => raw
            .chunks_exact(8)
            .map(|c| float_text(f64::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        Ok(DataType::Float16) => raw
            .chunks_exact(2)
            .map(|c| float_text(half::f16::from_le_bytes([c[0], c[1]]).to_f32()))
            .collect(),
        Ok(DataType::Bfloat16) => raw
            .chunks_exact(2)
            .map(|c| float_text(half::bf16::from_le_bytes([c[0], c[1]]).to_f32()))
            .collect(),
        Ok(DataType::Bool) => raw.iter().map(|&b| (b != 0).to_string()).collect(),
        _ => vec![format!("{} bytes", raw.len())],
    };
    let shown = if values.len() > 8 {
        format!("{}, ... ({} values)", values[..8].join(", "), values.len())
    } else {
        values.join(", ")
    };
    format!("{}[{dims}]{{{shown}}}", dtype_name(t.data_type))
}

/// `name=value` of one attribute, `name=@target` for a reference to a function attribute.
pub fn attr_text(a: &AttributeProto) -> String {
    if !a.ref_attr_name.is_empty() {
        return format!("{}=@{}", a.name, a.ref_attr_name);
    }
    let value = match AttributeType::try_from(a.r#type) {
        Ok(AttributeType::Int) => a.i.to_string(),
        Ok(AttributeType::Float) => float_text(a.f),
        Ok(AttributeType::String) => format!("{:?}", String::from_utf8_lossy(&a.s)),
        Ok(AttributeType::Ints) => {
            format!("[{}]", a.ints.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
        }
        Ok(AttributeType::Tensor) => a.t.as_ref().map_or_else(String::new, tensor_text),
        _ => format!("<type {}>", a.r#type),
    };
    format!("{}={value}", a.name)
}

/// One line per node: `outputs = [domain.]OpType<attrs>(inputs)`.
pub fn node_text(n: &NodeProto) -> String {
    let domain = if n.domain.is_empty() { String::new() } else { format!("{}.", n.domain) };
    let attrs = if n.attribute.is_empty() {
        String::new()
    } else {
        format!("<{}>", n.attribute.iter().map(attr_text).collect::<Vec<_>>().join(", "))
    };
    format!("{} = {domain}{}{attrs}({})", n.output.join(", "), n.op_type, n.input.join(", "))
}

/// A function: its signature, opset imports and one indented line per body node.
pub fn function_text(f: &FunctionProto) -> String {
    let mut s = String::new();
    let opsets: Vec<String> =
        f.opset_import.iter().map(|o| format!("{:?}:{}", o.domain, o.version)).collect();
    let _ = writeln!(
        s,
        "{}.{}<{}>({}) -> ({}) opset [{}]",
        f.domain.as_deref().unwrap_or(""),
        f.name.as_deref().unwrap_or(""),
        f.attribute.join(", "),
        f.input.join(", "),
        f.output.join(", "),
        opsets.join(", ")
    );
    for n in &f.node {
        let _ = writeln!(s, "  {}", node_text(n));
    }
    s
}

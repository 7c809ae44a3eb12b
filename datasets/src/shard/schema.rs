//! The Arrow schema of a shard and its Hugging Face `datasets` metadata entry.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};

use crate::record::{SourceInfo, NUM_ATTRIBUTES};

/// Which optional columns a split's shards hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    /// `label` (int64, null for unlabeled rows).
    pub label: bool,
    /// `coarse_label` (CIFAR-100).
    pub coarse_label: bool,
    /// `attributes` (fixed-size list of 40 int8).
    pub attributes: bool,
}

impl Columns {
    /// The columns a source's shards carry.
    pub fn of(info: &SourceInfo) -> Self {
        Columns {
            label: info.classes.is_some(),
            coarse_label: info.coarse_classes.is_some(),
            attributes: info.attributes.is_some(),
        }
    }
}

/// The `image` column's struct fields: `bytes` (binary) and `path` (string).
pub fn image_fields() -> Fields {
    Fields::from(vec![Field::new("bytes", DataType::Binary, true), Field::new("path", DataType::Utf8, true)])
}

/// The element field of the `attributes` list.
pub fn attribute_field() -> Arc<Field> {
    Arc::new(Field::new("element", DataType::Int8, true))
}

/// Builds the schema, with the `huggingface` metadata entry declaring Image, ClassLabel and
/// List features so that `datasets.load_dataset("parquet", ...)` decodes images and names classes.
pub fn schema(info: &SourceInfo, cols: Columns) -> SchemaRef {
    let mut fields = vec![Field::new("image", DataType::Struct(image_fields()), true)];
    let mut features = serde_json::Map::new();
    features.insert("image".into(), serde_json::json!({"_type": "Image"}));
    if cols.label {
        fields.push(Field::new("label", DataType::Int64, true));
        features.insert("label".into(), serde_json::json!({"names": info.classes, "_type": "ClassLabel"}));
    }
    if cols.coarse_label {
        fields.push(Field::new("coarse_label", DataType::Int64, true));
        features
            .insert("coarse_label".into(), serde_json::json!({"names": info.coarse_classes, "_type": "ClassLabel"}));
    }
    if cols.attributes {
        fields.push(Field::new("attributes", DataType::FixedSizeList(attribute_field(), NUM_ATTRIBUTES as i32), true));
        features.insert(
            "attributes".into(),
            serde_json::json!({"feature": {"dtype": "int8", "_type": "Value"}, "length": NUM_ATTRIBUTES, "_type": "List"}),
        );
    }
    for (name, ty, dtype) in
        [("index", DataType::Int64, "int64"), ("width", DataType::Int32, "int32"), ("height", DataType::Int32, "int32")]
    {
        fields.push(Field::new(name, ty, true));
        features.insert(name.into(), serde_json::json!({"dtype": dtype, "_type": "Value"}));
    }
    let hf = serde_json::json!({"info": {"features": features}});
    let metadata = HashMap::from([("huggingface".to_string(), hf.to_string())]);
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

//! Plan codecs: how tauc's own tables, scan and writer travel from the client to
//! the scheduler and on to executors.
//!
//! Both wrap Ballista's codecs and handle only tauc's nodes, which they tag
//! with a `TAUC` prefix (a byte sequence no protobuf message starts with);
//! everything else goes to Ballista's codec unchanged.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{Result, TableReference, exec_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};

use crate::ingest::raw_scan::{RawEventsTable, RawScanExec, RawSource};
use crate::warehouse::loads::RawObject;
use crate::warehouse::table::{WarehouseTable, WarehouseTableSpec};
use crate::warehouse::writer::{WriteExec, WriteNode, WriteSpec};

const TAG: &[u8] = b"TAUC";

#[derive(Serialize, Deserialize)]
enum Node {
    RawTable {
        source: RawSource,
        objects: Option<Vec<Vec<RawObject>>>,
    },
    Warehouse(WarehouseTableSpec),
    RawScan {
        source: RawSource,
        projection: Option<Vec<usize>>,
    },
    Write(WriteSpec),
}

fn encode(node: &Node, buf: &mut Vec<u8>) -> Result<()> {
    buf.extend_from_slice(TAG);
    serde_json::to_writer(buf, node)
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
}

fn decode(buf: &[u8]) -> Option<Result<Node>> {
    let body = buf.strip_prefix(TAG)?;
    Some(
        serde_json::from_slice(body)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e))),
    )
}

/// Logical codec: tauc tables, then Ballista's.
#[derive(Debug, Default)]
pub struct TaucLogicalCodec {
    inner: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for TaucLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        match decode(buf) {
            Some(Ok(Node::Write(spec))) => {
                let [input] = inputs else {
                    return exec_err!(
                        "tauc codec: TaucWrite takes one input, got {}",
                        inputs.len()
                    );
                };
                Ok(Extension {
                    node: Arc::new(WriteNode::new(input.clone(), spec)?),
                })
            }
            Some(Ok(_)) => exec_err!("tauc codec: not a logical plan node"),
            Some(Err(e)) => Err(e),
            None => self.inner.try_decode(buf, inputs, ctx),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        if let Some(write) = node.node.as_any().downcast_ref::<WriteNode>() {
            return encode(&Node::Write(write.spec.clone()), buf);
        }
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match decode(buf) {
            Some(Ok(Node::RawTable { source, objects })) => {
                Ok(Arc::new(RawEventsTable { source, objects }))
            }
            Some(Ok(Node::Warehouse(spec))) => Ok(Arc::new(WarehouseTable::from_spec(spec)?)),
            Some(Ok(_)) => exec_err!("tauc codec: not a table provider"),
            Some(Err(e)) => Err(e),
            None => self
                .inner
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let any: &dyn std::any::Any = node.as_ref();
        if let Some(raw) = any.downcast_ref::<RawEventsTable>() {
            let node = Node::RawTable {
                source: raw.source.clone(),
                objects: raw.objects.clone(),
            };
            return encode(&node, buf);
        }
        if let Some(table) = any.downcast_ref::<WarehouseTable>() {
            return encode(&Node::Warehouse(table.spec()), buf);
        }
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn datafusion::datasource::file_format::FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn datafusion::datasource::file_format::FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }
}

/// Physical codec: the raw scan, then Ballista's shuffle nodes.
#[derive(Debug, Default)]
pub struct TaucPhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for TaucPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match decode(buf) {
            Some(Ok(Node::RawScan { source, projection })) => {
                let [items] = inputs else {
                    return exec_err!(
                        "tauc codec: RawScanExec takes one input, got {}",
                        inputs.len()
                    );
                };
                Ok(Arc::new(RawScanExec::try_new(
                    source,
                    projection,
                    items.clone(),
                )?))
            }
            Some(Ok(Node::Write(spec))) => {
                let [input] = inputs else {
                    return exec_err!(
                        "tauc codec: TaucWriteExec takes one input, got {}",
                        inputs.len()
                    );
                };
                Ok(Arc::new(WriteExec::try_new(input.clone(), spec)?))
            }
            Some(Ok(_)) => exec_err!("tauc codec: not an execution plan"),
            Some(Err(e)) => Err(e),
            None => self.inner.try_decode(buf, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let any: &dyn std::any::Any = node.as_ref();
        if let Some(scan) = any.downcast_ref::<RawScanExec>() {
            let node = Node::RawScan {
                source: scan.source().clone(),
                projection: scan.projection().cloned(),
            };
            return encode(&node, buf);
        }
        if let Some(write) = any.downcast_ref::<WriteExec>() {
            return encode(&Node::Write(write.spec().clone()), buf);
        }
        self.inner.try_encode(node, buf, proto_converter)
    }
}

/// Upgrades a config that came from a client with tauc's codecs (codecs are
/// not part of the propagated settings).
pub fn with_codecs(config: SessionConfig) -> SessionConfig {
    config
        .with_ballista_logical_extension_codec(Arc::new(TaucLogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(TaucPhysicalCodec::default()))
}

//! What makes a plan portable between `tauc-job`, the scheduler and the
//! executors: the codecs that carry tauc's own nodes (raw scan, warehouse
//! tables, the writer) through Ballista's plan serialisation, and the
//! `tauc_*` functions every session registers.

pub mod codec;
pub mod row_pack;
pub mod udf;

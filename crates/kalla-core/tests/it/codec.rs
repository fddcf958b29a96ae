//! Kalla's UDFs travel through `datafusion-proto` by the codec, not by the receiver's registry.

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec;
use kalla_core::codec::{KallaPhysicalCodec, roundtrip_physical_plan};
use kalla_core::session::new_session;

#[tokio::test]
async fn udf_plans_decode_only_with_kallas_codec_and_give_the_same_answer() {
    let ctx = new_session(2, None).unwrap();
    // Columns, not literals: the optimizer would fold constant calls away.
    ctx.sql("CREATE TABLE t AS VALUES (1.10, 1.00, 0.10, 990, 1000, 1.1::double, 1.0::double, NULL::decimal(5,2))")
        .await
        .unwrap();
    let sql = "SELECT tolerance_match(column1, column2, column3) AS a, tolerance_match_pct(column4, column5, 0.01) AS b, \
               tolerance_match(column6, column7, 0.1::double) AS c, tolerance_match(column8, 1, 1) AS d FROM t";
    let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
    let bytes = physical_plan_to_bytes_with_extension_codec(plan.clone(), &KallaPhysicalCodec).unwrap();
    let bare = SessionContext::new();
    assert!(
        physical_plan_from_bytes_with_extension_codec(&bytes, &bare.task_ctx(), &DefaultPhysicalExtensionCodec {})
            .is_err()
    );
    let decoded = roundtrip_physical_plan(plan.clone(), &ctx.task_ctx()).unwrap();
    let before = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await.unwrap();
    let after = datafusion::physical_plan::collect(decoded, ctx.task_ctx()).await.unwrap();
    let text = pretty_format_batches(&after).unwrap().to_string();
    assert_eq!(pretty_format_batches(&before).unwrap().to_string(), text);
    // Exact decimals: both boundaries hold. Floats: 1.1 - 1.0 > 0.1. NULL in, NULL out.
    assert!(text.contains("| true | true | false |   |"), "{text}");
}

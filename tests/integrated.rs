//! Integrated mode: the service library inside the broker, over an
//! inventory on this host, behind the same API as a direct link.

mod common;

use common::broker::{TestBroker, open_attached};
use common::service::{ADMIN_PASSWORD, make_inventory};
use common::within;
use sha2::{Digest, Sha256};
use switchyard::api::pb;
use tonic::Code;

fn integrated(
    session: &str,
    name: &str,
    db: &std::path::Path,
    pw: &str,
) -> pb::ServiceIntegratedRequest {
    pb::ServiceIntegratedRequest {
        session_id: session.into(),
        name: name.into(),
        db: db.display().to_string(),
        admin_password: pw.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_share_one_integrated_service() {
    let broker = TestBroker::start(&[]).await;
    let db = broker.dir.path().join("inv.db");
    drop(make_inventory(&db, &[]));
    let mut a = broker.client().await;
    let mut b = broker.client().await;
    let (sa, _ha) = open_attached(&mut a).await;
    let (sb, _hb) = open_attached(&mut b).await;
    let first = a
        .service_integrated(integrated(&sa, "", &db, ADMIN_PASSWORD))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.reused);
    assert_eq!(first.service_name, "integrated:inv");
    let second = b
        .service_integrated(integrated(&sb, "", &db, ADMIN_PASSWORD))
        .await
        .unwrap()
        .into_inner();
    assert!(second.reused, "the database is opened once");

    let inv = a
        .inventory(pb::InventoryRequest {
            service: Some(pb::ServiceRef {
                session_id: sa.clone(),
                service_id: first.service_id.clone(),
                name: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inv.devices.len(), 3);

    let mut events = b
        .exec(pb::ExecRequest {
            service: Some(pb::ServiceRef {
                session_id: sb.clone(),
                service_id: second.service_id.clone(),
                name: String::new(),
            }),
            devices: vec!["core-1".into(), "edge-1".into()],
            commands: vec!["show version".into()],
            timeout_ms: 0,
            max_output_bytes: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut outputs = Vec::new();
    while let Some(e) = within(30, "exec", events.message()).await.unwrap() {
        if let Some(pb::exec_event::Event::DeviceResult(r)) = e.event {
            assert!(r.error.is_empty());
            outputs.push(String::from_utf8_lossy(&r.commands[0].output).into_owned());
        }
    }
    assert_eq!(outputs.len(), 2);
    assert!(outputs.iter().all(|o| o.contains("uptime")));

    let status = a.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.links.len(), 1);
    assert_eq!(status.links[0].transport, "integrated");
    assert_eq!(status.links[0].holders, 2);
    assert_eq!(status.links[0].connects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_password_is_refused_and_changes_nothing() {
    let broker = TestBroker::start(&[]).await;
    let db = broker.dir.path().join("inv.db");
    drop(make_inventory(&db, &[]));
    let before = Sha256::digest(std::fs::read(&db).unwrap());
    let mut c = broker.client().await;
    let (s, _h) = open_attached(&mut c).await;
    let e = c
        .service_integrated(integrated(&s, "", &db, "not-the-password"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("wrong admin password"), "{e:?}");
    assert_eq!(before, Sha256::digest(std::fs::read(&db).unwrap()));
    let missing = broker.dir.path().join("missing.db");
    let e = c
        .service_integrated(integrated(&s, "", &missing, ADMIN_PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // The right password still works afterwards.
    c.service_integrated(integrated(&s, "", &db, ADMIN_PASSWORD))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_connect_integrated_then_exec_and_terminal() {
    let broker = TestBroker::start(&[]).await;
    let out = common::service::connect_integrated_local(&broker).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = broker
        .command()
        .args(["exec", "local", "core-2", "-c", "show clock", "--json"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The device's report, then the summary line.
    let first = out.stdout.split(|b| *b == b'\n').next().unwrap();
    let report: serde_json::Value = serde_json::from_slice(first).unwrap();
    assert!(
        report["results"][0]["output"]
            .as_str()
            .unwrap()
            .contains("UTC")
    );

    let mut child = broker
        .command()
        .args(["terminal", "local", "edge-1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"show version\rexit\r")
        .await
        .unwrap();
    let out = within(30, "terminal", child.wait_with_output())
        .await
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("edge-1 uptime"), "{screen:?}");
}

//! Emergency contacts with the care app against a real PostgreSQL: enrolled
//! from the CSV import, authenticated like elders' devices, one namespace of
//! device ids.

use chrono::Utc;
use voicecare_store::dialer;
use voicecare_store::import::import_csv;
use voicecare_store::testing::TestDb;

const CSV: &str = "full_name,device_id,language,time_zone,community,contact1_name,contact1_phone,contact2_name,contact2_phone,contact2_device
Mary,tab-1,en,Asia/Shanghai,Riverside/North/Elm Street/Elm Court,Son,+8613800000001,Daughter,+8613800000002,app-daughter
Lily,tab-2,en,Asia/Shanghai,Riverside/North/Elm Street/Elm Court,Son,+8613800000003,Niece,+8613800000004,tab-1
Rose,tab-3,en,Asia/Shanghai,Riverside/North/Elm Street/Elm Court,Son,+8613800000005,Niece,+8613800000006,bad device!
";

#[tokio::test]
async fn contacts_devices_are_imported_authenticated_and_never_shared_with_an_elder() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let report = import_csv(pool, CSV.as_bytes(), true, true, Utc::now())
        .await
        .unwrap();
    assert_eq!(report.imported, 1, "{report:?}");
    let errs: Vec<(u64, &str)> = report
        .errors
        .iter()
        .map(|e| (e.line, e.column.as_str()))
        .collect();
    // Line 3 gives a contact the elder Mary's device; line 4 a malformed id.
    assert_eq!(errs.len(), 2, "{:?}", report.errors);
    assert_eq!(errs[0].0, 3);
    assert_eq!(errs[1], (4, "contact2_device"));

    let elder: i64 = sqlx::query_scalar("SELECT id FROM elders WHERE device_id = 'tab-1'")
        .fetch_one(pool)
        .await
        .unwrap();
    let contact = dialer::contact(pool, elder, 1).await.unwrap().unwrap();
    assert_eq!(
        (contact.position, contact.device_id.as_deref()),
        (2, Some("app-daughter"))
    );
    assert!(
        dialer::contact(pool, elder, 0)
            .await
            .unwrap()
            .unwrap()
            .device_id
            .is_none()
    );
    assert!(dialer::contact(pool, elder, 2).await.unwrap().is_none());

    let hash = [7u8; 32];
    assert_eq!(
        dialer::set_device_token(pool, "app-daughter", &hash, Utc::now())
            .await
            .unwrap(),
        elder
    );
    let cred = dialer::device_credential(pool, "app-daughter")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cred.elder_id, elder);
    assert_eq!(cred.contact_position, Some(2));
    assert_eq!(cred.token_hash.as_deref(), Some(&hash[..]));
    let own = dialer::device_credential(pool, "tab-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.contact_position, None);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'contact.set_device_token' AND elder_id = $1",
    )
    .bind(elder)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
}

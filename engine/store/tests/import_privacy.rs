//! Import errors say what is wrong with a value and where, never the value:
//! the report is printed, logged and pasted into tickets, and the file is full
//! of names, phone numbers and birth dates.

use chrono::{NaiveDate, NaiveTime, Utc};
use voicecare_store::dialer;
use voicecare_store::elders::{Contact, ElderView, NewElder, Phone, Schedule, TimeZoneName};
use voicecare_store::import::{ImportReport, import_csv};
use voicecare_store::reports::SampleItem;
use voicecare_store::testing::TestDb;

const HEADER: &str =
    "full_name,birth_date,phone,language,time_zone,community,contact1_name,contact1_phone\n";
const COMMUNITY: &str = "Riverside/North/Elm Street/Elm Court";

/// Every personal value in the file below, and the digits of each phone
/// number on their own (a message might drop the `+`).
const PERSONAL: &[&str] = &[
    "Zhou Guihua",
    "1941-05-17",
    "+8613811112222",
    "13811112222",
    "Qian Shufen",
    "1937-02-30",
    "+8613855556666",
    "13855556666",
    "Sun Yuelan",
    "1939-11-11",
    "Li Cuihua",
    "1899-12-31",
    "13877778888",
    "Wu Jianguo",
    "+0123",
    "Zheng Xiaoli",
    "12/03/1944",
];

fn csv() -> String {
    format!(
        "{HEADER}\
         Zhou Guihua,1941-05-17,+8613811112222,zh,Asia/Shanghai,{COMMUNITY},,\n\
         Qian Shufen,1937-02-30,+8613855556666,zh,Asia/Shanghi,{COMMUNITY},,\n\
         Sun Yuelan,1939-11-11,+86 138 1111 2222,zh,Asia/Shanghai,{COMMUNITY},,\n\
         Li Cuihua,1899-12-31,13877778888,zh,Asia/Shanghai,{COMMUNITY},,\n\
         Zheng Xiaoli,12/03/1944,+8613855556667,en,Europe/London,{COMMUNITY},Wu Jianguo,+0123\n"
    )
}

/// Everything a caller might print of the report.
fn shown(report: &ImportReport) -> String {
    let mut s = format!("{report:?}\n{}\n", serde_json::to_string(report).unwrap());
    for e in &report.errors {
        s.push_str(&format!("{e}\n"));
    }
    s
}

fn assert_no_personal_data(text: &str) {
    for p in PERSONAL {
        assert!(!text.contains(p), "{p:?} appears in:\n{text}");
    }
}

#[tokio::test]
async fn import_errors_never_quote_names_phones_or_birth_dates() {
    let db = TestDb::new().await;
    let report = import_csv(&db.pool, csv().as_bytes(), false, true, Utc::now())
        .await
        .unwrap();
    assert!(report.rolled_back);
    let text = shown(&report);
    assert_no_personal_data(&text);
    let has = |line: u64, column: &str, message: &str| {
        report
            .errors
            .iter()
            .any(|e| e.line == line && e.column == column && e.message.contains(message))
    };
    // Each problem is still named, with its line and column.
    assert!(
        has(3, "birth_date", "not a date (expected YYYY-MM-DD)"),
        "{text}"
    );
    assert!(has(3, "time_zone", "\"Asia/Shanghi\""), "{text}");
    assert!(has(4, "phone", "duplicates line 2"), "{text}");
    assert!(has(5, "birth_date", "after 1900"), "{text}");
    assert!(has(5, "phone", "E.164"), "{text}");
    assert!(
        has(6, "birth_date", "not a date (expected YYYY-MM-DD)"),
        "{text}"
    );
    assert!(has(6, "contact1_phone", "E.164"), "{text}");

    // The good row goes in; offered again, it collides with itself in the
    // database, and that message names the column only.
    let report = import_csv(&db.pool, csv().as_bytes(), true, true, Utc::now())
        .await
        .unwrap();
    assert_eq!(report.imported, 1, "{}", shown(&report));
    let report = import_csv(&db.pool, csv().as_bytes(), true, true, Utc::now())
        .await
        .unwrap();
    assert_eq!(report.imported, 0);
    let text = shown(&report);
    assert_no_personal_data(&text);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.line == 2 && e.column == "phone"),
        "{text}"
    );
}

#[test]
fn elder_records_redact_personal_fields_in_debug_output() {
    let phone = Phone::parse("+8613811112222").unwrap();
    let elder = NewElder {
        external_ref: Some("A1".into()),
        full_name: "Zhou Guihua".into(),
        birth_date: NaiveDate::from_ymd_opt(1941, 5, 17),
        address: Some("12 Elm Court".into()),
        phone: Some(phone.clone()),
        device_id: None,
        language: "zh".into(),
        time_zone: TimeZoneName::parse("Asia/Shanghai").unwrap(),
        community_id: 7,
        notes: Some("hard of hearing".into()),
        contacts: vec![Contact {
            name: "Wu Jianguo".into(),
            relation: Some("son".into()),
            phone: Phone::parse("+8613855556666").unwrap(),
            device_id: None,
        }],
        schedule: Some(Schedule {
            window_start: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            window_end: NaiveTime::from_hms_opt(11, 0, 0).unwrap(),
            days_of_week: 127,
            max_attempts: 3,
            retry_minutes: 10,
        }),
    };
    let view = ElderView {
        id: 1,
        external_ref: None,
        full_name: "Zhou Guihua".into(),
        birth_date: NaiveDate::from_ymd_opt(1941, 5, 17),
        age: Some(84),
        address: Some("12 Elm Court".into()),
        phone: Some("+8613811112222".into()),
        device_id: None,
        language: "zh".into(),
        time_zone: "Asia/Shanghai".into(),
        community_id: 7,
        community: "Elm Court".into(),
        notes: Some("hard of hearing".into()),
        contacts: serde_json::json!([{"name": "Wu Jianguo", "phone": "+8613855556666"}]),
    };
    let callee = dialer::Callee {
        elder_id: 1,
        full_name: "Zhou Guihua".into(),
        language: "zh".into(),
        time_zone: "Asia/Shanghai".into(),
        device_id: None,
        phone: Some(phone),
        contacts: 1,
        max_attempts: None,
        retry_minutes: None,
    };
    let contact = dialer::Contact {
        position: 1,
        name: "Wu Jianguo".into(),
        device_id: None,
    };
    let sample = SampleItem {
        operator_id: 1,
        operator_name: "Ann".into(),
        escalation_id: 2,
        call_id: 3,
        elder_name: "Zhou Guihua".into(),
        level: "urgent".into(),
        outcome: None,
        resolved_at: None,
    };
    for text in [
        format!("{callee:?}"),
        format!("{contact:?}"),
        format!("{sample:?}"),
    ] {
        assert_no_personal_data(&text);
    }
    for text in [
        format!("{elder:?}"),
        format!("{elder:#?}"),
        format!("{view:?}"),
    ] {
        assert_no_personal_data(&text);
        for p in ["12 Elm Court", "hard of hearing", "1941"] {
            assert!(!text.contains(p), "{p:?} appears in:\n{text}");
        }
        // What is not personal stays readable.
        assert!(text.contains("community_id: 7"), "{text}");
    }
}

//! Text utilities: normalisation for scoring, error rates, the compression
//! ratio used to spot repetitive hallucinations, and Traditional → Simplified
//! folding for the characters that matter in check-in replies.

use std::io::Write;

/// Is this a CJK ideograph (or CJK punctuation range)?
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// English words for WER: lower case, hyphens as spaces, punctuation removed,
/// "mr." spelled "mister".
pub fn normalize_en(text: &str) -> Vec<String> {
    let lower = text.to_lowercase().replace('-', " ");
    lower
        .split_whitespace()
        .map(|w| {
            if w == "mr." || w == "mr" {
                "mister".to_string()
            } else {
                w.to_string()
            }
        })
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Chinese characters for CER: Simplified, punctuation and spaces removed.
pub fn normalize_zh(text: &str) -> Vec<char> {
    to_simplified(text)
        .chars()
        .filter(|c| is_cjk(*c) || c.is_alphanumeric())
        .collect()
}

/// Levenshtein distance between two sequences.
pub fn edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// gzip-style compression ratio of the text (bytes / deflated bytes). Looping
/// hallucinations ("I'm fine. I'm fine. I'm fine...") compress very well.
pub fn compression_ratio(text: &str) -> f32 {
    if text.is_empty() {
        return 0.0;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = z.write_all(text.as_bytes());
    let packed = z.finish().map(|v| v.len()).unwrap_or(text.len());
    text.len() as f32 / packed.max(1) as f32
}

/// Does the text end in a loop: a unit of 1–12 characters repeated back to
/// back at least 6 times (and over at least 12 characters), such as
/// "s-y-y-y-y-y-y" or "谢谢谢谢谢谢谢谢"? Too short for the compression ratio to notice.
pub fn is_looping(text: &str) -> bool {
    let c: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    for p in 1..=12usize {
        let mut run = 0usize;
        for i in p..c.len() {
            if c[i] == c[i - p] {
                run += 1;
                if run + p >= (6 * p).max(12) {
                    return true;
                }
            } else {
                run = 0;
            }
        }
    }
    false
}

/// Traditional → Simplified pairs for characters whisper base produces in
/// Mandarin check-in replies (health, falls, daily life, politeness).
const T2S: &[(char, char)] = &[
    ('謝', '谢'),
    ('說', '说'),
    ('們', '们'),
    ('沒', '没'),
    ('來', '来'),
    ('點', '点'),
    ('氣', '气'),
    ('幫', '帮'),
    ('覺', '觉'),
    ('經', '经'),
    ('飯', '饭'),
    ('藥', '药'),
    ('醫', '医'),
    ('電', '电'),
    ('話', '话'),
    ('會', '会'),
    ('這', '这'),
    ('個', '个'),
    ('麼', '么'),
    ('裡', '里'),
    ('裏', '里'),
    ('嗎', '吗'),
    ('還', '还'),
    ('為', '为'),
    ('時', '时'),
    ('體', '体'),
    ('樣', '样'),
    ('見', '见'),
    ('對', '对'),
    ('難', '难'),
    ('過', '过'),
    ('後', '后'),
    ('開', '开'),
    ('門', '门'),
    ('車', '车'),
    ('動', '动'),
    ('長', '长'),
    ('問', '问'),
    ('題', '题'),
    ('間', '间'),
    ('東', '东'),
    ('兒', '儿'),
    ('媽', '妈'),
    ('爺', '爷'),
    ('廁', '厕'),
    ('帥', '帅'),
    ('順', '顺'),
    ('專', '专'),
    ('傳', '传'),
    ('護', '护'),
    ('悶', '闷'),
    ('暈', '晕'),
    ('嘔', '呕'),
    ('燒', '烧'),
    ('發', '发'),
    ('熱', '热'),
    ('壓', '压'),
    ('緊', '紧'),
    ('張', '张'),
    ('聽', '听'),
    ('請', '请'),
    ('讓', '让'),
    ('給', '给'),
    ('帶', '带'),
    ('機', '机'),
    ('現', '现'),
    ('實', '实'),
    ('學', '学'),
    ('歡', '欢'),
    ('愛', '爱'),
    ('親', '亲'),
    ('從', '从'),
    ('鐘', '钟'),
    ('錢', '钱'),
    ('買', '买'),
    ('賣', '卖'),
    ('飲', '饮'),
    ('歲', '岁'),
    ('幾', '几'),
    ('號', '号'),
    ('離', '离'),
    ('場', '场'),
    ('無', '无'),
    ('雙', '双'),
    ('腦', '脑'),
    ('臉', '脸'),
    ('腸', '肠'),
    ('衛', '卫'),
    ('邊', '边'),
    ('麵', '面'),
    ('餓', '饿'),
    ('飽', '饱'),
    ('夢', '梦'),
    ('憂', '忧'),
    ('鬱', '郁'),
    ('慮', '虑'),
    ('獨', '独'),
    ('單', '单'),
    ('嘆', '叹'),
    ('總', '总'),
    ('隻', '只'),
    ('腳', '脚'),
    ('頭', '头'),
    ('痺', '痹'),
    ('喫', '吃'),
    ('馬', '马'),
    ('趕', '赶'),
    ('師', '师'),
    ('孫', '孙'),
    ('鄰', '邻'),
    ('區', '区'),
    ('級', '级'),
    ('顧', '顾'),
    ('錯', '错'),
    ('嚴', '严'),
    ('樓', '楼'),
    ('傷', '伤'),
    ('噁', '恶'),
    ('臟', '脏'),
    ('風', '风'),
    ('視', '视'),
    ('線', '线'),
    ('陣', '阵'),
    ('陳', '陈'),
    ('劉', '刘'),
    ('楊', '杨'),
    ('黃', '黄'),
    ('趙', '赵'),
    ('吳', '吴'),
    ('閒', '闲'),
    ('歷', '历'),
    ('曆', '历'),
    ('溫', '温'),
    ('讀', '读'),
    ('寫', '写'),
    ('報', '报'),
    ('紙', '纸'),
    ('節', '节'),
    ('約', '约'),
    ('診', '诊'),
    ('檢', '检'),
    ('療', '疗'),
    ('齒', '齿'),
    ('聲', '声'),
    ('響', '响'),
    ('靜', '静'),
];

/// Fold the Traditional characters in [`T2S`] to Simplified.
pub fn to_simplified(text: &str) -> String {
    text.chars()
        .map(|c| {
            T2S.iter()
                .find(|(t, _)| *t == c)
                .map(|(_, s)| *s)
                .unwrap_or(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_normalisation_and_wer() {
        let r = normalize_en("He was not an ill-disposed young man.");
        let h = normalize_en("he was not an old disposed young man");
        assert_eq!(r.len(), 8);
        assert_eq!(edit_distance(&r, &h), 1);
        assert_eq!(normalize_en("Mr. Dashwood"), vec!["mister", "dashwood"]);
    }

    #[test]
    fn chinese_normalisation_folds_traditional_and_drops_punctuation() {
        assert_eq!(
            normalize_zh("我帥到了，謝謝！"),
            "我帅到了谢谢".chars().collect::<Vec<_>>()
        );
        assert_eq!(
            edit_distance(&normalize_zh("救命啊"), &normalize_zh("就命啊")),
            1
        );
    }

    #[test]
    fn short_loops_are_found() {
        assert!(is_looping("He was not an old-s-s-y-y-y-y-y-y-y-y-y"));
        assert!(is_looping("谢谢谢谢谢谢谢谢谢谢谢谢"));
        assert!(!is_looping("I'm fine, thank you. I had breakfast already."));
        assert!(!is_looping(
            "Had he married a more amiable woman, he might have been made still more respectable."
        ));
        assert!(!is_looping("哈哈哈"));
    }

    #[test]
    fn loops_compress_well_and_sentences_do_not() {
        let looped = "I'm fine. ".repeat(20);
        assert!(
            compression_ratio(&looped) > 2.4,
            "{}",
            compression_ratio(&looped)
        );
        assert!(compression_ratio("I fell down in the bathroom and I can't get up.") < 2.0);
    }
}

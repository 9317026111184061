//! The burn models against real weights and real references: numerical parity with PyTorch on
//! all-MiniLM-L6-v2, HuggingFace key mapping, training steps under autodiff, character spans.

mod common;

use burn::module::{Module, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use phrasesweep_workers::model::bert::{BertConfig, BertInput};
use phrasesweep_workers::model::device::{Cpu, CpuTrain};
use phrasesweep_workers::model::encoders::{
    ParagraphInput, PhraseEncoder, QueryEncoder, Reader, encode_paragraphs,
};
use phrasesweep_workers::model::load::{load_bert, read_tokenizer};
use phrasesweep_workers::model::text::TextEncoder;
use safetensors::SafeTensors;
use common::{model_dir, tiny_config};
use std::path::Path;


fn fixture() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/minilm-parity.safetensors"))
        .expect("tests/fixtures/minilm-parity.safetensors (made by scripts/parity_fixture.py)")
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap();
    (t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(), t.shape().to_vec())
}

fn i64s(st: &SafeTensors, name: &str) -> (Vec<i64>, Vec<usize>) {
    let t = st.tensor(name).unwrap();
    (t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(), t.shape().to_vec())
}

fn parity<B: Backend>(device: &B::Device) {
    let dir = model_dir();
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let texts: Vec<String> = serde_json::from_str(&meta["batch"]).unwrap();
    let text = TextEncoder::new(read_tokenizer(&dir).unwrap()).unwrap();
    let (_, model) = load_bert::<B>(&dir, device).unwrap();

    // A padded batch: ids must match the reference tokenizer, hidden states to 1e-4 where unmasked.
    let (ids, shape) = i64s(&st, "a_ids");
    let (mask, _) = i64s(&st, "a_mask");
    let (expected, _) = f32s(&st, "a_hidden");
    let (n, len) = (shape[0], shape[1]);
    let rows: Vec<_> = texts.iter().map(|t| text.single(t, 512).unwrap()).collect();
    for (r, row) in rows.iter().enumerate() {
        let reference: Vec<u32> = (0..len).filter(|&k| mask[r * len + k] == 1).map(|k| ids[r * len + k] as u32).collect();
        assert_eq!(row.ids, reference, "tokenization of {:?}", texts[r]);
    }
    let got: Vec<f32> = model.forward(text.batch::<B>(&rows, len, device)).into_data().convert::<f32>().to_vec().unwrap();
    let d = expected.len() / (n * len);
    let mut max = 0f32;
    for r in 0..n {
        for k in (0..len).filter(|&k| mask[r * len + k] == 1) {
            for c in 0..d {
                let i = (r * len + k) * d + c;
                max = max.max((got[i] - expected[i]).abs());
            }
        }
    }
    assert!(max <= 1e-4, "batch: max abs diff {max} > 1e-4");

    // 512 tokens: every 8th position was kept.
    let long = &meta["long_text"];
    let row = text.single(long, 512).unwrap();
    let (ids, _) = i64s(&st, "b_ids");
    assert_eq!(row.ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), ids, "tokenization of the long text");
    let (expected, _) = f32s(&st, "b_hidden");
    let got: Vec<f32> = model.forward(text.batch::<B>(&[row], 0, device)).into_data().convert::<f32>().to_vec().unwrap();
    let mut max = 0f32;
    for (p, pos) in (0..512).step_by(8).enumerate() {
        for c in 0..d {
            max = max.max((got[pos * d + c] - expected[p * d + c]).abs());
        }
    }
    assert!(max <= 1e-4, "512 tokens: max abs diff {max} > 1e-4");
}

#[test]
fn minilm_matches_pytorch_on_cpu() {
    parity::<Cpu>(&Default::default());
}

#[cfg(feature = "cuda")]
#[test]
fn minilm_matches_pytorch_on_cuda() {
    parity::<phrasesweep_workers::model::device::Gpu>(&phrasesweep_workers::model::device::cuda_device(0));
}

/// Writes a random BERT with HuggingFace's tensor names ([out, in] Linear weights, LayerNorm
/// weight/bias) and returns the tensors written.
fn write_hf_bert(dir: &Path, config: &BertConfig, prefix: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let (d, f, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![v, d]),
        ("embeddings.position_embeddings.weight".into(), vec![config.max_position_embeddings, d]),
        ("embeddings.token_type_embeddings.weight".into(), vec![config.type_vocab_size, d]),
        ("embeddings.LayerNorm.weight".into(), vec![d]),
        ("embeddings.LayerNorm.bias".into(), vec![d]),
        ("pooler.dense.weight".into(), vec![d, d]),
    ];
    for l in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{l}.");
        for (name, shape) in [
            ("attention.self.query", vec![d, d]),
            ("attention.self.key", vec![d, d]),
            ("attention.self.value", vec![d, d]),
            ("attention.output.dense", vec![d, d]),
            ("intermediate.dense", vec![f, d]),
            ("output.dense", vec![d, f]),
        ] {
            shapes.push((format!("{p}{name}.weight"), shape.clone()));
            shapes.push((format!("{p}{name}.bias"), vec![shape[0]]));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            shapes.push((format!("{p}{ln}.weight"), vec![d]));
            shapes.push((format!("{p}{ln}.bias"), vec![d]));
        }
    }
    let mut seed = 7u64;
    let mut rand = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = shapes
        .into_iter()
        .map(|(n, s)| {
            let len = s.iter().product();
            (format!("{prefix}{n}"), s, (0..len).map(|_| rand()).collect())
        })
        .collect();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string(config).unwrap()).unwrap();
    tensors
}

fn values<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>) -> Vec<f32> {
    p.val().into_data().convert::<f32>().to_vec().unwrap()
}

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| v[r * cols + c])).collect()
}

#[test]
fn huggingface_layout_loads_with_and_without_the_bert_prefix() {
    for prefix in ["", "bert."] {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(50);
        let written = write_hf_bert(dir.path(), &config, prefix);
        let get = |n: &str| written.iter().find(|(name, _, _)| name == &format!("{prefix}{n}")).unwrap();
        let (_, model) = load_bert::<Cpu>(dir.path(), &Default::default()).unwrap();

        assert_eq!(values(&model.embeddings.word_embeddings.weight), get("embeddings.word_embeddings.weight").2);
        assert_eq!(values(&model.embeddings.layer_norm.gamma), get("embeddings.LayerNorm.weight").2);
        assert_eq!(values(model.embeddings.layer_norm.beta.as_ref().unwrap()), get("embeddings.LayerNorm.bias").2);
        let layer = &model.encoder.layer[1];
        let (_, s, q) = get("encoder.layer.1.attention.self.query.weight");
        assert_eq!(values(&layer.attention.self_attn.query.weight), transpose(q, s[0], s[1]), "Linear weights are transposed");
        let (_, s, w) = get("encoder.layer.1.intermediate.dense.weight");
        assert_eq!(values(&layer.intermediate.dense.weight), transpose(w, s[0], s[1]));
        assert_eq!(values(layer.output.dense.bias.as_ref().unwrap()), get("encoder.layer.1.output.dense.bias").2);
        assert_eq!(values(&layer.output.layer_norm.gamma), get("encoder.layer.1.output.LayerNorm.weight").2);
        assert_eq!(values(&layer.attention.output.layer_norm.gamma), get("encoder.layer.1.attention.output.LayerNorm.weight").2);
    }
}

fn ids<B: Backend>(rows: &[Vec<i64>], device: &B::Device) -> BertInput<B> {
    let (n, len) = (rows.len(), rows[0].len());
    let flat: Vec<i64> = rows.concat();
    let t = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [n, len]), device);
    BertInput { input_ids: t(flat.clone()), token_type_ids: t(vec![0; n * len]), attention_mask: t(vec![1; n * len]) }
}

/// One AdamW step on a fixed batch must change the weights and lower the loss.
fn one_step<M, F>(model: M, loss: F)
where
    M: Module<CpuTrain> + burn::module::AutodiffModule<CpuTrain> + Clone,
    F: Fn(&M) -> Tensor<CpuTrain, 1>,
{
    let before = loss(&model);
    let first: Vec<f32> = before.clone().into_data().convert::<f32>().to_vec().unwrap();
    let grads = GradientsParams::from_grads(before.backward(), &model);
    let old = model.clone();
    let mut optim = AdamWConfig::new().init();
    let model = optim.step(1e-3, model, grads);
    let after: Vec<f32> = loss(&model).into_data().convert::<f32>().to_vec().unwrap();
    assert!(after[0] < first[0], "loss did not fall: {} -> {}", first[0], after[0]);
    let flat = |m: &M| -> Vec<f32> {
        let mut v = Vec::new();
        m.visit(&mut Collect(&mut v));
        v
    };
    assert_ne!(flat(&old), flat(&model), "weights did not change");
}

struct Collect<'a>(&'a mut Vec<f32>);
impl burn::module::ModuleVisitor<CpuTrain> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<CpuTrain, D>>) {
        self.0.extend(param.val().into_data().convert::<f32>().to_vec::<f32>().unwrap());
    }
}

#[test]
fn each_model_trains_one_step_under_autodiff() {
    let device = Default::default();
    let config = tiny_config(40);
    let batch = ids::<CpuTrain>(&[vec![1, 5, 9, 3, 7, 2], vec![1, 4, 4, 8, 6, 2]], &device);
    let targets = Tensor::<CpuTrain, 1, Int>::from_data(TensorData::new(vec![2i64, 3], [2]), &device);
    let ce = CrossEntropyLossConfig::new().init(&device);

    // Phrase encoder: start logits from a fixed query against token vectors, plus the filter head.
    let q = Tensor::<CpuTrain, 2>::random([32, 1], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    one_step(PhraseEncoder::<CpuTrain>::new(&config, &device), |m| {
        let (h, f) = m.forward(batch.clone());
        let [b, s, _] = h.dims();
        let start = h.matmul(q.clone().unsqueeze::<3>().repeat_dim(0, b)).reshape([b, s]);
        let filter = f.slice([0..b, 0..s, 0..1]).reshape([b, s]);
        ce.forward(start, targets.clone()) + ce.forward(filter, targets.clone())
    });
    // Query encoder: q_start and q_end pick the right row of a fixed set of phrase vectors.
    let phrases = Tensor::<CpuTrain, 2>::random([32, 5], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    one_step(QueryEncoder::<CpuTrain>::new(&config, &device), |m| {
        let (qs, qe) = m.forward(batch.clone());
        ce.forward(qs.matmul(phrases.clone()), targets.clone()) + ce.forward(qe.matmul(phrases.clone()), targets.clone())
    });
    // Reader: start and end positions.
    one_step(Reader::<CpuTrain>::new(&config, &device), |m| {
        let (s, e) = m.forward(batch.clone());
        ce.forward(s, targets.clone()) + ce.forward(e, targets.clone())
    });
}

/// Lowercased, accents removed: what an uncased WordPiece token shows of its text.
fn fold(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    s.nfd().filter(|c| !unicode_normalization::char::is_combining_mark(*c)).collect::<String>().to_lowercase()
}

#[test]
fn kept_tokens_point_at_their_characters_also_in_non_ascii_text() {
    let dir = model_dir();
    let tokenizer = read_tokenizer(&dir).unwrap();
    let text = TextEncoder::new(tokenizer.clone()).unwrap();
    let device = Default::default();
    let model = PhraseEncoder::<Cpu>::new(&tiny_config(30522), &device);
    let paragraph = "Zürich’s Großmünster (built 1100–1220) stands by the Limmat. Kraków and São Paulo, naïve café: 東京!";
    let sentences = phrasesweep_workers::text::sentences::split_sentences(paragraph);
    let settings = phrasesweep_schemas::settings::EncodeSettings { max_len: 24, overlap: 6, ..Default::default() };
    let input = [ParagraphInput { title: "Zürich", text: paragraph, sentences: &sentences }];
    let out = encode_paragraphs(&model, &text, &input, &settings, &device).unwrap().remove(0);
    assert!(out.pieces > 24, "the paragraph must need several windows");
    assert_eq!(out.tokens.len(), out.pieces, "no threshold keeps every token");
    assert_eq!(out.vectors.len(), out.tokens.len() * 32);
    let chars: Vec<char> = paragraph.chars().collect();
    let pieces = tokenizer.encode(paragraph, false).unwrap();
    for (t, piece) in out.tokens.iter().zip(pieces.get_tokens()) {
        let span: String = chars[t.start as usize..t.end as usize].iter().collect();
        assert_eq!(fold(&span), piece.trim_start_matches("##"), "token {} spans {:?}", t.token, span);
        let (s, e) = sentences[t.sentence as usize];
        assert!(s <= t.start && t.end <= e, "token {span:?} lies in its sentence");
    }
    assert_eq!(out.tokens.last().unwrap().sentence, 1);
}

/// A checkpoint in the layout of DensePhrases' published ones (written by PyTorch with
/// `scripts/densephrases_fixture.py`: three BERTs and the filter head in one `pytorch_model.bin`, a
/// `vocab.txt` and no `tokenizer.json`) loads as `densephrases:PATH`: the phrase encoder's hidden states,
/// the filter logits, and q_start / q_end match PyTorch's to 1e-4.
#[test]
fn densephrases_checkpoints_load_and_match_pytorch() {
    use phrasesweep_workers::model::registry::{load_phrase_encoder, load_query_encoder, model_ref};
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/densephrases-tiny");
    let dir = tempfile::tempdir().unwrap();
    for name in ["config.json", "pytorch_model.bin"] {
        std::fs::copy(fixture.join(name), dir.path().join(name)).unwrap_or_else(|e| panic!("{name} (made by scripts/densephrases_fixture.py): {e}"));
    }
    for name in ["vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(model_dir().join(name), dir.path().join(name)).unwrap();
    }
    let bytes = std::fs::read(fixture.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let device = Default::default();
    let model = model_ref(&format!("densephrases:{}", dir.path().display())).unwrap();
    assert!(model.path.starts_with("densephrases:"));
    let (phrase, _) = load_phrase_encoder::<Cpu>(&model, &device).unwrap();
    let (query, text) = load_query_encoder::<Cpu>(&model, &device).unwrap();
    assert_eq!(text.pieces("Who wrote War and Peace?").unwrap().ids, TextEncoder::new(read_tokenizer(&model_dir()).unwrap()).unwrap().pieces("Who wrote War and Peace?").unwrap().ids, "the tokenizer built from vocab.txt is tokenizer.json's");

    let input = |ids: &str, mask: &str, types: Option<&str>| -> BertInput<Cpu> {
        let (v, shape) = i64s(&st, ids);
        let t = |v: Vec<i64>| Tensor::<Cpu, 2, Int>::from_data(TensorData::new(v, [shape[0], shape[1]]), &device);
        let types = types.map(|n| i64s(&st, n).0).unwrap_or(vec![0; v.len()]);
        BertInput { input_ids: t(v), token_type_ids: t(types), attention_mask: t(i64s(&st, mask).0) }
    };
    let close = |got: Vec<f32>, name: &str, keep: &dyn Fn(usize) -> bool| {
        let (expected, _) = f32s(&st, name);
        assert_eq!(got.len(), expected.len(), "{name}");
        let max = got.iter().zip(&expected).enumerate().filter(|(i, _)| keep(*i)).map(|(_, (a, b))| (a - b).abs()).fold(0f32, f32::max);
        assert!(max < 1e-4, "{name}: max difference {max}");
    };
    let (mask, _) = i64s(&st, "mask");
    let mask = &mask;
    let (h, f) = phrase.forward(input("ids", "mask", Some("types")));
    // Padded positions differ by design (masked); compare the rest.
    let per_token = |d: usize| move |i: usize| mask[i / d] == 1;
    close(h.into_data().convert::<f32>().to_vec().unwrap(), "hidden", &per_token(32));
    close(f.into_data().convert::<f32>().to_vec().unwrap(), "filter", &per_token(2));
    let (qs, qe) = query.forward(input("q_ids", "q_mask", None));
    close(qs.into_data().convert::<f32>().to_vec().unwrap(), "q_start", &|_| true);
    close(qe.into_data().convert::<f32>().to_vec().unwrap(), "q_end", &|_| true);

    // A model trained from it is saved as a phrasesweep checkpoint (the tokenizer built from vocab.txt
    // saved inside) and loads back the same.
    let saved = tempfile::tempdir().unwrap();
    let config = phrasesweep_workers::model::load::read_config(dir.path()).unwrap();
    phrasesweep_workers::model::checkpoint::save::<Cpu, _>(&query, saved.path(), "query-encoder", &config, dir.path()).unwrap();
    let (again, again_text) = load_query_encoder::<Cpu>(&model_ref(&saved.path().display().to_string()).unwrap(), &device).unwrap();
    assert_eq!(again_text.pieces("Who wrote War and Peace?").unwrap().ids, text.pieces("Who wrote War and Peace?").unwrap().ids);
    let (qs2, _) = again.forward(input("q_ids", "q_mask", None));
    close(qs2.into_data().convert::<f32>().to_vec().unwrap(), "q_start", &|_| true);

    // A folder without those keys is refused with the layout it lacks.
    let plain = tempfile::tempdir().unwrap();
    std::fs::copy(model_dir().join("config.json"), plain.path().join("config.json")).unwrap();
    std::fs::write(plain.path().join("pytorch_model.bin"), b"not a checkpoint").unwrap();
    let r = model_ref(&format!("densephrases:{}", plain.path().display())).unwrap();
    assert!(load_query_encoder::<Cpu>(&r, &device).is_err());
}

/// Truecasing questions is the study's step for cased models; MiniLM's tokenizer lowercases, so there
/// it changes nothing (and `auto` leaves it off), while a cased tokenizer sees the difference.
#[test]
fn truecasing_is_a_no_op_for_uncased_minilm_only() {
    use phrasesweep_workers::text::truecase::Truecaser;
    let minilm = TextEncoder::new(read_tokenizer(&model_dir()).unwrap()).unwrap();
    assert!(!minilm.keeps_case());
    let caser = Truecaser::learn(["The Beatles played in Hamburg, Germany, in 1960."]);
    let question = "where did the beatles play in germany";
    let cased = caser.apply(question);
    assert_eq!(cased, "Where did the Beatles play in Germany");
    assert_eq!(minilm.pieces(&cased).unwrap().ids, minilm.pieces(question).unwrap().ids);

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(model_dir().join("vocab.txt"), dir.path().join("vocab.txt")).unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"do_lower_case": false}"#).unwrap();
    let cased_tokenizer = TextEncoder::new(read_tokenizer(dir.path()).unwrap()).unwrap();
    assert!(cased_tokenizer.keeps_case());
    // Without tokenizer_config.json, a vocabulary without capitals is taken as uncased.
    std::fs::remove_file(dir.path().join("tokenizer_config.json")).unwrap();
    assert!(!TextEncoder::new(read_tokenizer(dir.path()).unwrap()).unwrap().keeps_case());
    assert_ne!(cased_tokenizer.pieces(&cased).unwrap().ids, cased_tokenizer.pieces(question).unwrap().ids);
}

/// A HuggingFace `BertForQuestionAnswering` folder (all-MiniLM-L6-v2 with a `qa_outputs` head added)
/// loads as a reader with that head, transposed to burn's layout; a plain BERT folder gets a new one.
#[test]
fn a_question_answering_folder_brings_its_head() {
    let base = model_dir();
    let dir = tempfile::tempdir().unwrap();
    for name in ["config.json", "tokenizer.json"] {
        std::fs::copy(base.join(name), dir.path().join(name)).unwrap();
    }
    let bytes = std::fs::read(base.join("model.safetensors")).unwrap();
    let original = SafeTensors::deserialize(&bytes).unwrap();
    let hidden = 384;
    let weight: Vec<f32> = (0..2 * hidden).map(|i| i as f32 / 1000.0).collect();
    let bias = [0.25f32, -0.5];
    let as_bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    let (weight_bytes, bias_bytes) = (as_bytes(&weight), as_bytes(&bias));
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = original.tensors().into_iter().collect();
    tensors.push(("qa_outputs.weight".into(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, hidden], &weight_bytes).unwrap()));
    tensors.push(("qa_outputs.bias".into(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &bias_bytes).unwrap()));
    safetensors::serialize_to_file(tensors, None, &dir.path().join("model.safetensors")).unwrap();

    let device = Default::default();
    let reader = Reader::<Cpu>::from_pretrained(dir.path(), &device).unwrap();
    let w: Vec<f32> = reader.qa.weight.val().into_data().to_vec().unwrap();
    // HF keeps [out, in]; burn's Linear [in, out].
    assert_eq!(reader.qa.weight.val().dims(), [hidden, 2]);
    assert!((0..hidden).all(|i| w[i * 2] == weight[i] && w[i * 2 + 1] == weight[hidden + i]), "the head is transposed into place");
    let b: Vec<f32> = reader.qa.bias.as_ref().unwrap().val().into_data().to_vec().unwrap();
    assert_eq!(b, bias);
    let plain = Reader::<Cpu>::from_pretrained(&base, &device).unwrap();
    let p: Vec<f32> = plain.qa.bias.as_ref().unwrap().val().into_data().to_vec().unwrap();
    assert_ne!(p, bias, "a plain BERT folder gets a new head");
}

"""`logits:<source>` blend inputs: logits matched to classes by name (AffectNet and FER2013 spellings)."""
import numpy as np

from blend.inputs import input_tasks, read_input
from store import FeatureStore

FER = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
AFFECTNET_VA = ["Anger", "Contempt", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise",
                "valence", "arousal"]


def _store(path, names, logits):
    with FeatureStore.open(path, "a") as st:
        rows = st.add_samples([f"v/{i}.jpg" for i in range(len(logits))], split="val")
        st.create_source("bb", identity={"b": 1}, arrays={"logits": (len(names), names)})
        st.write_features("bb", rows, {"logits": logits}, status=np.ones(len(rows)))
    return path


def test_fer_logits_map_to_mtl_and_lsd(tmp_path):
    z = np.array([[1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.5]])
    p = _store(tmp_path / "s.h5", FER, z)
    e = np.exp(z[0]) / np.exp(z[0]).sum()
    with FeatureStore.open(p) as st:
        assert input_tasks(st, "logits:bb") == ["expr", "lsd"]
        expr = read_input(st, "logits:bb", "expr", st.rows("val"))[0]
        lsd = read_input(st, "logits:bb", "lsd", st.rows("val"))[0]
    # MTL order: Neutral, Anger, Disgust, Fear, Happiness, Sadness, Surprise, Other (FER has none: 0)
    np.testing.assert_allclose(expr, [e[6], e[0], e[1], e[2], e[3], e[4], e[5], 0.0], rtol=1e-6)
    six = e[:6] / e[:6].sum()  # Anger, Disgust, Fear, Happiness, Sadness, Surprise
    np.testing.assert_allclose(lsd, six, rtol=1e-6)


def test_affectnet_logits_contempt_becomes_other_and_va_passes_through(tmp_path):
    z = np.array([[0.1, 1.5, -0.3, 0.0, 2.0, 0.7, -1.0, 0.2, 0.4, -0.6]])
    p = _store(tmp_path / "s.h5", AFFECTNET_VA, z)
    e = np.exp(z[0, :8]) / np.exp(z[0, :8]).sum()
    with FeatureStore.open(p) as st:
        assert input_tasks(st, "logits:bb") == ["expr", "va", "lsd"]
        expr = read_input(st, "logits:bb", "expr", st.rows("val"))[0]
        va = read_input(st, "logits:bb", "va", st.rows("val"))[0]
    np.testing.assert_allclose(expr, e[[5, 0, 2, 3, 4, 6, 7, 1]], rtol=1e-6)  # docs/REFERENCE.md's map
    np.testing.assert_allclose(va, [0.4, -0.6], rtol=1e-6)

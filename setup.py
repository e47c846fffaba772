"""speechssl: self-supervised speech representation learning that runs end to end on a laptop."""
from pathlib import Path

from setuptools import find_packages, setup

_HERE = Path(__file__).parent


def _version() -> str:
    for line in (_HERE / "speechssl" / "version.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("speechssl/version.py has no __version__")


# upstream/ and downstream/ live at the top of the repo but install inside the package,
# so that nothing called `upstream` lands in site-packages.
_packages = find_packages(include=["speechssl", "speechssl.*"])
_packages += ["speechssl.upstream." + p if p else "speechssl.upstream"
              for p in [""] + find_packages(where="upstream")]
_packages += ["speechssl.downstream." + p if p else "speechssl.downstream"
              for p in [""] + find_packages(where="downstream")]

setup(
    name="speechssl",
    version=_version(),
    description="Self-supervised speech representation learning: pretraining, SUPERB-style evaluation, hub",
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=_packages,
    package_dir={"speechssl.upstream": "upstream", "speechssl.downstream": "downstream"},
    package_data={"speechssl.corpus": ["texts/*.txt", "texts/*.json"], "speechssl.nn.ssm": ["csrc/*.cpp"]},
    install_requires=[
        "torch==2.13.0",
        "numpy>=1.24,<3",
        "soundfile>=0.12,<1",
        "soxr>=0.3,<2",
        "librosa>=0.10,<0.12",
        "sentencepiece>=0.1.99,<0.3",
        "pillow>=9.1,<14",
        "scikit-learn>=1.3,<2",
        "gensim>=4.3,<5",
        "tensorboard>=2.14,<3",
        "tqdm>=4.60,<5",
        "pyyaml>=6,<7",
        "safetensors>=0.4,<1",
        "espeakng-loader>=0.2.4,<0.3",
        "editdistance>=0.6,<1",
        "matplotlib>=3.7,<4",
    ],
    extras_require={
        "test": [
            "pytest>=7,<10",
            "pytest-xdist>=3,<4",
            "kaldi-native-fbank>=1.18,<2",
            "transformers>=4.40,<6",
            "jiwer>=3,<5",
            "pyannote.metrics>=4,<5",  # DER oracle (tests/downstream/test_metrics_oracles.py)
            "filelock>=3.12,<5",
        ],
        # tools/bench baselines: faiss-cpu's k-means beside sklearn's (tools/bench/kmeans.py)
        "bench": [
            "faiss-cpu>=1.7.4,<2",
        ],
    },
    entry_points={
        "console_scripts": ["speechssl = speechssl.cli:main"],
        # Each entry point names a speechssl.registry.Method / DownstreamTask object.
        "speechssl.upstream": [
            "cae = speechssl.upstream.cae:METHOD",
            "hubert = speechssl.upstream.hubert:METHOD",
            "hubertopic = speechssl.upstream.hubertopic:METHOD",
            "lighthubert = speechssl.upstream.lighthubert:METHOD",
            "mae = speechssl.upstream.mae:METHOD",
            "mixedae = speechssl.upstream.mixedae:METHOD",
            "simclr = speechssl.upstream.simclr:METHOD",
            "slotcon = speechssl.upstream.slotcon:METHOD",
            "speecht5 = speechssl.upstream.speecht5:METHOD",
            "ssamba = speechssl.upstream.ssamba:METHOD",
            "transinv = speechssl.upstream.transinv:METHOD",
            "umd = speechssl.upstream.umd:METHOD",
            "w2v_bert = speechssl.upstream.w2v_bert:METHOD",
            "wav2vec2 = speechssl.upstream.wav2vec2:METHOD",
        ],
        "speechssl.downstream": [
            f"{task} = speechssl.downstream.{task}:TASK"
            for task in ("ks", "sid", "asv", "ic", "sf", "pr", "asr", "qbe", "sd", "er", "image_probe", "image_seg",
                         "image_seg_unsup")
        ],
    },
)

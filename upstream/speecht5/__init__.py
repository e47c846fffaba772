"""SpeechT5 (Ao et al., 2022): one encoder-decoder for speech and text through modality pre/post-nets."""

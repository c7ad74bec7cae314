"""GPT-SoVITS dataset preparation: annotations, audio, text, features, semantic codes, layout."""

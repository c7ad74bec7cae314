"""GPT-SoVITS model definitions: the stage-1 text-to-semantic GPT and the stage-2 SoVITS GAN."""

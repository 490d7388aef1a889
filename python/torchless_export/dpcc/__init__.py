"""D-PCC reference codec (model, blocks, FPS/kNN, direction table)."""

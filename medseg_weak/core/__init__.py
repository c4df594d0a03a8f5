"""The bottom layer: pieces several stages share (mask overlap maths, weight loading, LR schedules,
the process pool). Nothing here imports a stage package (data, classify, explain, segment, ...)."""

"""What a finished run did and how it learned: the test-set report, predictions for files and
photos, pictures of the data, the one-file HTML report, and the runs shared with TensorBoard and
MLflow.

- `evaluate`: loss, accuracy, top-k, per-class precision/recall/F1, confusion matrix, mistakes.
- `predict`: image files, folders and test-set items prepared as the run's data, their classes.
- `pictures`: sample grids and single images of a dataset.
- `report`: one self-contained HTML file of one run or several.
- `share`: TensorBoard event files and MLflow runs made from run folders.
"""

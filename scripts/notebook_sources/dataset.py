"""Cells of notebooks/dataset.ipynb (written by scripts/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# Which images? The Dataset view\n\n"
        "Before asking *why*, find the images worth explaining: the wrong ones, the confidently wrong ones. "
        "`sw.scan` runs the model over a whole dataset (forward passes in chunks, rows committed to a Parquet + "
        "zarr store as they land) and records each image's prediction, confidence, loss, margin and entropy. "
        "The panel's *Dataset* view filters and sorts that table, and the thumbnails you pick are explained in "
        "the *Maps* view.\n\n"
        "First, the Keras CNN of `keras_digits.ipynb` over all 1,797 of scikit-learn's digits."
    ),
    new_code_cell(
        "# NBVAL_IGNORE_OUTPUT\n"
        "import os\n"
        "os.environ.setdefault(\"TF_CPP_MIN_LOG_LEVEL\", \"2\")  # quiet TensorFlow's start-up logs\n"
        "import tempfile\n"
        "import numpy as np\n"
        "import salwidget as sw\n"
        "from salwidget import models\n\n"
        "model = models.digits_cnn()\n"
        "x_train, y_train, x_test, y_test = models.digits_data()\n"
        "digits, labels = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])\n"
        "sw.predict(model, digits[:1]);  # TensorFlow starts here (its logs go to this cell)"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "store = tempfile.mkdtemp(prefix=\"salwidget-demo-\")\n"
        "scan = sw.scan(model, digits, labels, class_names=models.DIGIT_NAMES, store=store)\n"
        "print(f\"{len(scan.table)} digits, accuracy {scan.accuracy:.3f}, {int((~scan.table.correct).sum())} wrong\")\n"
        "confident = scan.table.query(\"not correct and probability > 0.9\")\n"
        "print(confident[[\"label\", \"predicted\", \"probability\"]].round(2).to_string())"
    ),
    new_markdown_cell(
        "The confusion matrix counts images by true digit (rows) and prediction (columns). Run the scan again on "
        "the same store and nothing is computed: the rows are read back."
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "print(scan.confusion())\n"
        "again = sw.scan(model, digits, labels, class_names=models.DIGIT_NAMES, store=store)\n"
        "print(\"model calls the second time:\", again.calls)"
    ),
    new_markdown_cell(
        "The panel takes the scan (or the data itself) and opens on the Dataset view: click a cell of the "
        "confusion matrix to see those images, filter, sort, type a pandas query, click thumbnails to pick them "
        "and press *Explain selected*."
    ),
    new_code_cell(
        "w = sw.SaliencyWidget(model, scan, methods=(\"vanilla\", \"smoothgrad\", \"integrated\"), nintegration=32)\n"
        "w"
    ),
    new_markdown_cell("The same from Python: the confidently wrong digits, highest loss first, explained:"),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "w.query = \"not correct and probability > 0.9\"\n"
        "w.sort_by = \"loss\"\n"
        "print(\"shown:\", w.dataset_rows)\n"
        "w.selection = w.dataset_rows[:4]\n"
        "w.pane = \"maps\"\n"
        "w.wait()\n"
        "print([(int(scan.table.label[i]), int(t)) for i, t in zip(w.selection, w.results[\"vanilla\"].target)])"
    ),
    new_markdown_cell(
        "## Maps and faithfulness over the whole dataset\n\n"
        "`sw.attribute_dataset` stores every image's map (zarr) and adds per-image columns to the scan's table: "
        "deletion and insertion AUCs, the completeness gap of path methods, and the rank correlation of two "
        "methods' maps. Stopped or killed, it computes only the missing rows when run again; `engine=\"ray\"` "
        "runs the same blocks on a Ray cluster. Here Gradient and Integrated Gradients over every digit:"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "job = sw.attribute_dataset(model, scan, [\"vanilla\", \"integrated\"], curve_steps=8,\n"
        "                           options={\"integrated\": {\"nsamples\": 16, \"baseline\": 0.0}})\n"
        "table = job.table\n"
        "print(job.labels, job.maps(\"integrated\", [0, 1]).shape)\n"
        "print(table[[\"vanilla_deletion_auc\", \"integrated_deletion_auc\", \"integrated_vs_vanilla_spearman\"]]"
        ".describe().loc[[\"count\", \"mean\"]].round(3).to_string())"
    ),
    new_markdown_cell(
        "The Dataset view sorts by the stored columns too. The least faithful Integrated Gradients maps (the "
        "highest deletion AUC: deleting the pixels IG ranks first barely lowers the score), and where the two "
        "methods disagree most:"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "w.pane = \"dataset\"\n"
        "w.query = \"\"\n"
        "w.sort_by = \"integrated_deletion_auc\"\n"
        "least_faithful = w.dataset_rows[:6]\n"
        "auc = table.loc[w.dataset_rows, \"integrated_deletion_auc\"].to_numpy()\n"
        "print(\"sorted by the stored AUC, highest first:\", bool((auc[:-1] >= auc[1:]).all()))\n"
        "w.sort_by, w.sort_descending = \"integrated_vs_vanilla_spearman\", False\n"
        "rho = table.loc[w.dataset_rows, \"integrated_vs_vanilla_spearman\"].to_numpy()\n"
        "print(\"sorted by agreement, lowest first:\", bool((rho[:-1] <= rho[1:]).all()))"
    ),
    new_markdown_cell(
        "## A folder of pictures\n\n"
        "A folder works the same way (class subfolders give the labels, as torchvision's `ImageFolder`; a flat "
        "folder has none). Here EfficientNet-Lite0 reads scikit-image's pictures, written to a folder as JPEG "
        "files, through a `preprocess` that makes any picture a 224 x 224 model input."
    ),
    new_code_cell(
        "import torch\n"
        "from PIL import Image\n"
        "from skimage import data as pictures\n\n"
        "folder = tempfile.mkdtemp(prefix=\"salwidget-pictures-\")\n"
        "for name in (\"chelsea\", \"coffee\", \"astronaut\", \"rocket\", \"camera\", \"cat\", \"coins\", \"horse\"):\n"
        "    picture = getattr(pictures, name)()\n"
        "    picture = np.stack([picture] * 3, -1) if picture.ndim == 2 else picture[..., :3]\n"
        "    if picture.dtype != np.uint8:\n"
        "        picture = (picture * 255).astype(np.uint8)\n"
        "    Image.fromarray(picture).save(os.path.join(folder, f\"{name}.jpg\"))\n\n"
        "net, class_names = models.efficientnet_lite0()\n\n\n"
        "def preprocess(picture):\n"
        "    \"\"\"RGB uint8 (H, W, 3) -> the model's input: centre square, 224 x 224, [0, 1], channels first.\"\"\"\n"
        "    side = min(picture.shape[:2])\n"
        "    top, left = (picture.shape[0] - side) // 2, (picture.shape[1] - side) // 2\n"
        "    square = Image.fromarray(picture[top : top + side, left : left + side]).resize((224, 224), Image.BILINEAR)\n"
        "    return np.asarray(square, np.float32).transpose(2, 0, 1) / 255"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "photos = sw.scan(net, folder, class_names=class_names, preprocess=preprocess)\n"
        "table = photos.table.assign(file=[photos.source.paths[i].stem for i in photos.table.index])\n"
        "print(table[[\"file\", \"predicted_name\", \"probability\"]].round(2).to_string(index=False))"
    ),
    new_code_cell(
        "w2 = sw.SaliencyWidget(net, folder, class_names=class_names, preprocess=preprocess,\n"
        "                       methods=(\"vanilla\", \"gradcam\"))\n"
        "w2.sort_by = \"probability\"\n"
        "w2"
    ),
]

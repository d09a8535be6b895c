"""The explorer's model description: what the page is told about a run."""

from vaelab.viz.explorer.session import dataset_label


def test_a_data_file_is_named_without_its_folders():
    assert dataset_label("/home/someone/data/digits.npz") == "digits.npz"
    assert dataset_label("runs/gallery/mnist-short.npz") == "mnist-short.npz"
    assert dataset_label("mnist") == "mnist"

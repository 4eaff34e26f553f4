"""Export the state_dict that ``train_torchvision.py`` wrote to ONNX with ``torch.onnx.export``.

Plain PyTorch again, as a user shipping to ONNX Runtime would do it; the batch dimension is left
free so that any batch size runs.

    python examples/ship/export_onnx.py --weights shufflenet.pt --out shufflenet.onnx
"""

from __future__ import annotations

import argparse

import torch
import torchvision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="state_dict from train_torchvision.py")
    parser.add_argument("--out", required=True, help=".onnx file to write")
    parser.add_argument("--arch", default="shufflenet_v2_x0_5", help="torchvision model name")
    parser.add_argument("--num-classes", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=48)
    args = parser.parse_args()

    model = torchvision.models.get_model(args.arch, weights=None, num_classes=args.num_classes)
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    model.eval()
    example = torch.zeros(1, 3, args.image_size, args.image_size)
    torch.onnx.export(
        model,
        (example,),
        args.out,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

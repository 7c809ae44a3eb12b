use crate::common::*;

#[test]
fn model_summary_prints_shapes_and_the_reference_parameter_count() {
    let text = ok(&["model", "summary", "--backbone", "resnet18_cifar", "--image-size", "32"]);
    assert!(text.contains("[1, 512, 4, 4]"), "{text}");
    assert!(text.contains("Total params: 11,168,832"), "{text}");
    let err = fails(&["model", "summary", "--backbone", "resnet50"]);
    assert!(err.contains("unknown backbone \"resnet50\""), "{err}");
}

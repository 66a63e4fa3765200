"""The ``@deploy`` functions, one module per component. They apply what :mod:`metalseed.render`
renders; the files under ``deploys/`` that operators hand to pyinfra only call them."""

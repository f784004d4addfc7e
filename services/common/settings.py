"""The settings base of the three services, and helpers for their pydantic-settings classes.

Every service reads ``<PREFIX><FIELD>`` environment variables through a subclass of
:class:`ServiceSettings`, which adds what all of them share:

* ``log_json`` and ``log_level``;
* secrets (every ``SecretStr`` field, lists of them included) may instead be read from a
  file named by ``<VARIABLE>_FILE`` (Docker and Kubernetes secrets are mounted as files).
  Setting both the variable and its ``_FILE`` twin is refused: which of two different
  secrets should win is not something to guess, and silently taking one hides a
  misconfigured deployment. An empty variable counts as unset, so a compose file may leave
  ``FOO: ""`` next to ``FOO_FILE``.
* deprecated variable names (``validation_alias=AliasChoices(new, old)``; the prefix is
  applied to aliases too) keep working with a warning naming the new variable.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Self, get_args

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from services.common.identity import OidcConfig
from services.common.secrets import SecretFile, read_secret_text
from services.common.serving import ServerTls, client_tls, server_tls

log = logging.getLogger(__name__)

FILE_SUFFIX = "_FILE"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


OptionalPath = Annotated[Path | None, BeforeValidator(lambda v: None if v == "" else v)]
"""A path that may be unset; an empty variable means unset (as compose files write it)."""


class SettingsRefused(ValueError):
    """A service refuses to start with these settings; the message names what to set."""


def split_commas(value: object) -> object:
    """``"a, b,,c"`` as ``["a", "b", "c"]``; a value that is not a string passes unchanged."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaSeparated = BeforeValidator(split_commas)


def parse_pairs(value: object) -> object:
    """``"a=x, b=y"`` as ``{"a": "x", "b": "y"}``; a mapping passes unchanged."""
    if not isinstance(value, str):
        return value
    pairs: dict[str, str] = {}
    for part in split_commas(value):  # type: ignore[union-attr]
        key, sep, item = part.partition("=")
        if not sep or not key.strip() or not item.strip():
            raise ValueError(f"{part!r} is not of the form name=value")
        pairs[key.strip()] = item.strip()
    return pairs


"""Field metadata for a list read from one comma-separated variable (not JSON):
``Annotated[list[X], NoDecode, CommaSeparated]``."""


def is_secret(field: FieldInfo) -> bool:
    """Whether ``SecretStr`` appears anywhere in the field's type (``list[SecretStr] | None``)."""
    pending: list[Any] = [field.annotation]
    while pending:
        annotation = pending.pop()
        if annotation is SecretStr:
            return True
        pending.extend(get_args(annotation))
    return False


def reveal(secret: SecretStr | None) -> str:
    """The secret's value; an unset secret is the empty string."""
    return secret.get_secret_value() if secret is not None else ""


def sqlite_or_configured(url: SecretStr | None, data_dir: Path, file_name: str) -> str:
    """The configured database URL, or the embedded SQLite file ``data_dir/file_name``.

    An empty URL counts as unset, so ``DATABASE_URL=`` in a compose file means SQLite.
    """
    return reveal(url) or f"sqlite:///{data_dir.resolve() / file_name}"


class SecretFileRef(NamedTuple):
    """Where one secret setting was read from."""

    env_name: str  # the variable it stands in for, as the source keys it
    variable: str  # the ``<VARIABLE>_FILE`` that named the file
    path: str


class SecretFileSource(EnvSettingsSource):
    """Reads each secret field from the file named by its variable's ``_FILE`` twin.

    It is an environment source whose "environment" is the content of those files, keyed by
    the variable they stand in for, so aliases, prefixes and comma-separated lists behave
    exactly as for the variables themselves.
    """

    def secret_files(self) -> dict[str, SecretFileRef]:
        """Secret field name -> the ``_FILE`` variable given for it and the path it names."""
        environ = {
            (key if self.case_sensitive else key.lower()): value
            for key, value in os.environ.items()
        }
        suffix = FILE_SUFFIX if self.case_sensitive else FILE_SUFFIX.lower()
        files: dict[str, SecretFileRef] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            if not is_secret(field):
                continue
            for _, env_name, _ in self._extract_field_info(field, field_name):
                path = environ.get(env_name + suffix)
                if path is None:
                    continue
                variable = env_name.upper()
                if environ.get(env_name):
                    raise SettingsError(
                        f"both {variable} and {variable}{FILE_SUFFIX} are set; set only one"
                    )
                files[field_name] = SecretFileRef(env_name, variable + FILE_SUFFIX, path)
        return files

    def _load_env_vars(self) -> dict[str, str]:
        return {
            ref.env_name: _read_secret(ref.variable, ref.path)
            for ref in self.secret_files().values()
        }


def _alias_names(info: FieldInfo) -> set[str]:
    alias = info.validation_alias
    if isinstance(alias, str):
        return {alias}
    if isinstance(alias, AliasChoices):
        return {choice for choice in alias.choices if isinstance(choice, str)}
    return set()


def _field_parser(settings_cls: type[BaseSettings], field: str) -> Callable[[str], Any]:
    """Text of a secret file -> the field's value, validated as at start (a bad file
    raises ``ValueError``); an empty optional secret is None, as at start."""
    info = settings_cls.model_fields[field]
    kind = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    adapter: TypeAdapter[Any] = TypeAdapter(kind)

    def parse(text: str) -> Any:
        value = adapter.validate_python(text)
        if info.default is None and isinstance(value, SecretStr) and not reveal(value):
            return None
        return value

    return parse


def _read_secret(variable: str, path: str) -> str:
    try:
        return read_secret_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError(f"{variable} names {path!r}, which cannot be read: {reason}") from exc


class ServiceSettings(BaseSettings):
    """Base of the services' settings: logging, ``_FILE`` secrets, deprecated names.

    Subclasses set ``env_prefix`` and may list ``deprecated_variables`` (old full variable
    name -> new one) whose use is warned about when the settings are read.
    """

    model_config = SettingsConfigDict(
        extra="ignore",
        # Aliases are suffixes like field names (the prefix is added), and a field may
        # still be given by its name in code (``Settings(node_token=...)``).
        env_prefix_target="all",
        populate_by_name=True,
    )

    deprecated_variables: ClassVar[dict[str, str]] = {}

    log_json: bool = Field(False, description="One JSON object per log line (containers).")
    log_level: LogLevel = Field("INFO", description="Lowest level logged.")
    # HTTPS (docs/security.md): both files, or neither for plain HTTP behind a TLS ingress.
    ssl_certfile: OptionalPath = Field(None, description="PEM certificate (chain) to serve HTTPS.")
    ssl_keyfile: OptionalPath = Field(None, description="PEM private key of SSL_CERTFILE.")
    # People signed in through the hospital's identity provider (OpenID Connect bearer JWTs).
    oidc_issuer: str = Field("", description="Expected `iss` of JWTs; empty = no single sign-on.")
    oidc_audience: str = Field("", description="Expected `aud` of JWTs (this service's client id).")
    oidc_jwks_url: str = Field("", description="The identity provider's JWKS URL.")
    oidc_role_claim: str = Field(
        "roles", description="Dotted path of the claim listing roles or groups."
    )
    oidc_role_map: Annotated[dict[str, str], NoDecode, BeforeValidator(parse_pairs)] = Field(
        default_factory=dict,
        description="IdP role or group -> this service's role, as `group=role,group2=role`.",
    )
    oidc_name_claim: str = Field("name", description="Claim with the person's display name.")
    oidc_jwks_refresh_seconds: float = Field(
        10,
        ge=0,
        le=3600,
        description="Least time between two JWKS fetches caused by unknown key ids.",
    )

    _secret_files: dict[str, SecretFile[Any]] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        # Secrets given as files stay linked to them, so that a rotated file is seen
        # without a restart (live_secret). A value passed in code beats the file.
        given = set(values)
        for field, ref in SecretFileSource(type(self)).secret_files().items():
            info = type(self).model_fields[field]
            if given & {field, *_alias_names(info)}:
                continue
            self._secret_files[field] = SecretFile(
                ref.path, _field_parser(type(self), field), name=ref.variable
            )

    def live_secret(self, name: str) -> Callable[[], Any]:
        """A function answering the current value of secret setting ``name``.

        For a secret read from ``<VARIABLE>_FILE`` that is the file's content now (checked
        at most once a second, see :mod:`services.common.secrets`), parsed as at start; for
        any other it is the value read at start. Credential checks and clients call it per
        request, so Kubernetes can rotate a mounted secret without a restart.
        """
        if name not in type(self).model_fields:
            raise KeyError(name)
        secret_file = self._secret_files.get(name)
        if secret_file is not None:
            return secret_file.get
        value = getattr(self, name)
        return lambda: value

    def live_token(self, name: str) -> Callable[[], str]:
        """Like :meth:`live_secret` for a single secret, revealed ("" when unset)."""
        current = self.live_secret(name)
        return lambda: reveal(current())

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _oidc_all_or_nothing(self) -> Self:
        given = [bool(self.oidc_issuer), bool(self.oidc_audience), bool(self.oidc_jwks_url)]
        if any(given) and not all(given):
            prefix = self.model_config.get("env_prefix", "")
            raise ValueError(
                f"single sign-on needs {prefix}OIDC_ISSUER, {prefix}OIDC_AUDIENCE and "
                f"{prefix}OIDC_JWKS_URL together"
            )
        return self

    def oidc_config(self) -> OidcConfig | None:
        """The identity provider to accept JWTs from, or None without single sign-on."""
        if not self.oidc_issuer:
            return None
        return OidcConfig(
            issuer=self.oidc_issuer,
            audience=self.oidc_audience,
            jwks_url=self.oidc_jwks_url,
            role_claim=self.oidc_role_claim,
            role_map=self.oidc_role_map,
            name_claim=self.oidc_name_claim,
            jwks_refresh_cooldown_seconds=self.oidc_jwks_refresh_seconds,
        )

    def server_tls(self, **kwargs: Any) -> ServerTls | None:
        """HTTPS for ``serve`` (None for plain HTTP); bad files raise ``TlsConfigError``."""
        return server_tls(self.ssl_certfile, self.ssl_keyfile, **kwargs)

    @model_validator(mode="after")
    def _empty_optional_secret_is_unset(self) -> Self:
        """``FOO=""`` for an optional secret means "not configured", as its absence does."""
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if field.default is None and isinstance(value, SecretStr) and not reveal(value):
                setattr(self, name, None)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        for old, new in cls.deprecated_variables.items():
            if old in os.environ or old + FILE_SUFFIX in os.environ:
                log.warning("%s is deprecated; set %s instead", old, new)
        # A file beats an empty variable of the same name (both non-empty is an error).
        return (init_settings, SecretFileSource(settings_cls), env_settings, dotenv_settings)

    @classmethod
    def variable_names(cls) -> dict[str, str]:
        """Field name -> the environment variable documented for it."""
        prefix = cls.model_config.get("env_prefix", "")
        return {name: (prefix + name).upper() for name in cls.model_fields}

    @classmethod
    def secret_variable_names(cls) -> set[str]:
        """The variables that may be given as ``<VARIABLE>_FILE`` instead."""
        names = cls.variable_names()
        return {names[field] for field, info in cls.model_fields.items() if is_secret(info)}

    def environment(self) -> dict[str, str]:
        """Variables that give another process (a worker) exactly these settings.

        Secrets are revealed: the result is meant for a child process's environment only.
        A secret read from a file is passed as that file (``<VARIABLE>_FILE``), so the child
        follows its rotations too.
        """
        env: dict[str, str] = {}
        for field, variable in self.variable_names().items():
            value = getattr(self, field)
            if (secret_file := self._secret_files.get(field)) is not None:
                env[variable], env[variable + FILE_SUFFIX] = "", str(secret_file.path)
                continue
            if isinstance(value, dict):  # name=value pairs, as parse_pairs reads them
                env[variable] = ",".join(f"{k}={v}" for k, v in value.items())
                continue
            items = value if isinstance(value, list) else [value]
            env[variable] = ",".join(
                reveal(item) if isinstance(item, SecretStr) else "" if item is None else str(item)
                for item in items
            )
        return env


class HubClientSettings(ServiceSettings):
    """Settings of a service that calls the hub (node, inference API): how TLS is checked.

    ``ca_bundle`` is the CA the hub's certificate must chain to (the federation CA of
    ``fedmedclip pki``, or the hospital's); empty = the system store. Under mutual TLS the
    service presents ``client_certfile``/``client_keyfile`` (from ``fedmedclip pki
    issue-node``), whose common name must be this node's name at the hub.
    """

    ca_bundle: OptionalPath = Field(
        None, description="CA bundle to verify the hub; empty = system."
    )
    client_certfile: OptionalPath = Field(
        None, description="Client certificate shown to the hub (mutual TLS)."
    )
    client_keyfile: OptionalPath = Field(None, description="Private key of CLIENT_CERTFILE.")

    @model_validator(mode="after")
    def _client_pair(self) -> Self:
        if (self.client_certfile is None) != (self.client_keyfile is None):
            prefix = self.model_config.get("env_prefix", "")
            raise ValueError(
                f"set both {prefix}CLIENT_CERTFILE and {prefix}CLIENT_KEYFILE, or neither"
            )
        return self

    def hub_tls(self) -> ssl.SSLContext | bool:
        """What httpx should ``verify`` with; bad files raise ``TlsConfigError``."""
        return client_tls(self.ca_bundle, self.client_certfile, self.client_keyfile)

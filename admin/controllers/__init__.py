"""One controller per admin resource; ALL is what the app mounts."""

from admin.controllers.analytics import AnalyticsController
from admin.controllers.audit import AuditController
from admin.controllers.auth import AuthController
from admin.controllers.backends import BackendsController
from admin.controllers.dashboard import DashboardController
from admin.controllers.help import HelpController
from admin.controllers.playground import PlaygroundController
from admin.controllers.settings import SettingsController
from admin.controllers.trust import TrustController
from admin.controllers.users import UsersController
from admin.controllers.welcome import WelcomeController

ALL = (
    AuthController,
    DashboardController,
    UsersController,
    BackendsController,
    SettingsController,
    AnalyticsController,
    AuditController,
    PlaygroundController,
    HelpController,
    WelcomeController,
    TrustController,
)
